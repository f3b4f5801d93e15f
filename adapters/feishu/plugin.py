"""Feishu/Lark's plug-in: its settings section, its doctor checks and its adapter
(``bot.platforms.PlatformPlugin``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from adapters.feishu.settings import FeishuSettings
from bot.doctor import Check

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.types import Adapter


class FeishuPlugin:
    name = "feishu"
    title = "Feishu/Lark"
    settings_class = FeishuSettings
    variables = ("FEISHU_APP_ID", "FEISHU_APP_SECRET")

    def configured(self, settings: Settings) -> bool:
        return settings.section(FeishuSettings).configured

    def checks(self, settings: Settings) -> Iterator[Check]:
        feishu = settings.section(FeishuSettings)
        if feishu.configured:
            yield Check("feishu", "OK", f"app {feishu.app_id} on {feishu.domain}")
        elif feishu.app_id or feishu.app_secret:
            yield Check("feishu", "FAIL", "set both FEISHU_APP_ID and FEISHU_APP_SECRET")

    def create(self, settings: Settings) -> Adapter:
        from adapters.feishu.adapter import FeishuAdapter  # lark-oapi loads only when Feishu is used

        return FeishuAdapter(settings)


FEISHU = FeishuPlugin()
