"""Core tests need no model: with the fake engine (``tests/support/engines.py``) they run where torch cannot load.

The listed modules run in a fresh interpreter in which importing torch (or transformers, accelerate) fails, so a
test, fixture or helper that reached for the real model would fail the run instead of silently loading it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "transformers", "accelerate")
WITHOUT_TORCH = f"""
import sys

class NoModel:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ImportError(name + " must not be imported here")
        return None

sys.meta_path.insert(0, NoModel())
"""
RUN_PYTEST = "import pytest; sys.exit(pytest.main(sys.argv[1:]))"
TORCH_FREE_CORE_TESTS = tuple(f"tests/core/test_{name}.py" for name in ("library", "answer_cache", "app_journal"))


def without_torch(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH + code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=150, stdin=subprocess.DEVNULL)  # fmt: skip


def test_the_interpreter_of_these_runs_cannot_import_torch() -> None:
    done = without_torch("import torch")
    assert done.returncode != 0 and "torch must not be imported here" in done.stderr


def test_core_test_modules_pass_without_torch() -> None:
    done = without_torch(RUN_PYTEST, *TORCH_FREE_CORE_TESTS, "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "error" not in summary, summary
