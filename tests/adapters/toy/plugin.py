"""Toy chat's plug-in (``bot.platforms.PlatformPlugin``): its settings section, doctor checks and adapter.

A real platform lists its plug-in in ``adapters/registry.py``; Toy chat lives in the tests and is not listed.
"""

from __future__ import annotations

from collections.abc import Iterator

from bot.doctor import Check
from bot.settings import Settings
from bot.types import Adapter
from tests.adapters.toy.adapter import ToyAdapter, ToySettings


class ToyPlugin:
    name = "toy"
    title = "Toy chat"
    settings_class = ToySettings
    variables = ("TOY_URL", "TOY_TOKEN")

    def configured(self, settings: Settings) -> bool:
        return settings.section(ToySettings).configured

    def checks(self, settings: Settings) -> Iterator[Check]:
        if self.configured(settings):
            yield Check("toy", "OK", f"server {settings.section(ToySettings).url}")

    def create(self, settings: Settings) -> Adapter:
        return ToyAdapter(settings)


TOY = ToyPlugin()
