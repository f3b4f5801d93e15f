"""The dependency policy (README, "Dependencies"): every requirement has a floor and a ceiling, the floors stay past
the known vulnerabilities, and the versions installed here (the tested ones) lie inside the bounds."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

FIXED_IN = {
    "aiohttp": "3.12.14",  # CVE-2025-53643, request smuggling
    "torch": "2.6",  # CVE-2025-32434, torch.load(weights_only=True) runs code
    "pillow": "11.3",  # CVE-2024-28219 (10.3), CVE-2025-48379 (11.2.x)
    "transformers": "4.53",  # the 2025 ReDoS and deserialisation advisories
    "httpx": "0.23",  # CVE-2021-41945
    "pydantic": "2.4",  # CVE-2024-3772
}
"""The first release past each known vulnerability: a floor below it would let ``pip`` pick a vulnerable one."""


def requirements() -> list[Requirement]:
    extras = [r for group in PROJECT["optional-dependencies"].values() for r in group]
    return [Requirement(line) for line in [*PROJECT["dependencies"], *extras]]


def floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(floors, default=None)


@pytest.mark.parametrize("requirement", requirements(), ids=str)
def test_every_dependency_has_a_floor_and_a_tested_ceiling(requirement: Requirement) -> None:
    operators = {spec.operator for spec in requirement.specifier}
    assert ">=" in operators, f"{requirement} has no floor"
    assert "<" in operators or "<=" in operators, f"{requirement} has no ceiling"
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed here")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"the tested {requirement.name} {installed} lies outside {requirement.specifier}: move the bound with the "
        "upgrade (README, Dependencies)"
    )


@pytest.mark.parametrize(("name", "fixed"), sorted(FIXED_IN.items()))
def test_floors_exclude_known_vulnerable_releases(name: str, fixed: str) -> None:
    requirement = next(r for r in requirements() if r.name == name)
    lowest = floor(requirement)
    assert lowest is not None and lowest >= Version(fixed), f"{requirement} admits releases before {fixed}"
