"""Feishu/Lark adapter: an asyncio long connection, lark-oapi REST, streaming card replies."""

from adapters.feishu.adapter import FeishuAdapter, FeishuStartupError

__all__ = ["FeishuAdapter", "FeishuStartupError"]
