"""Feishu/Lark adapter: an asyncio long connection, lark-oapi REST, streaming card replies.

The adapter's classes load lark-oapi on first use, so that ``adapters.feishu.plugin`` (settings, doctor checks)
costs no SDK import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from adapters.feishu.adapter import FeishuAdapter, FeishuStartupError

__all__ = ["FeishuAdapter", "FeishuStartupError"]
__getattr__ = lazy_exports(
    __name__, {"FeishuAdapter": "adapters.feishu.adapter", "FeishuStartupError": "adapters.feishu.adapter"}
)
