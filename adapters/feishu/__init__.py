"""Feishu/Lark adapter: an asyncio long connection, lark-oapi REST, streaming card replies.

The adapter's classes load lark-oapi on first use, so that ``adapters.feishu.plugin`` (settings, doctor checks)
costs no SDK import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.feishu.adapter import FeishuAdapter, FeishuStartupError

__all__ = ["FeishuAdapter", "FeishuStartupError"]
_HOMES = {"FeishuAdapter": "adapters.feishu.adapter", "FeishuStartupError": "adapters.feishu.adapter"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
