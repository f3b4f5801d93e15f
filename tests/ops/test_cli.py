"""The ``peekbot`` command line, run as a subprocess the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def peekbot(*args: str, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    return {"PEEKBOT_DATA_DIR": str(tmp_path / "data"), "PEEKBOT_MAX_NEW_TOKENS": "16",
            "PEEKBOT_MAX_PIXELS": str(256 * 256), "PEEKBOT_HTTP_PORT": "0"}


def test_chat_answers_a_question_about_an_image(tmp_path: Path, tiny_qwen3_dir: Path,
                                                base_env: dict[str, str]) -> None:
    shot = tmp_path / "shot.png"
    Image.new("RGB", (400, 300), (200, 30, 30)).save(shot)
    result = peekbot("chat", "--image", str(shot), "what does this error mean?",
                     env={**base_env, "PEEKBOT_MODEL": str(tiny_qwen3_dir)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()  # the streamed answer
    assert "peekbot:" not in result.stdout


def test_chat_demo_builds_its_model_once_and_says_it_is_random(tmp_path: Path, base_env: dict[str, str]) -> None:
    shot = tmp_path / "shot.png"
    Image.new("RGB", (300, 300), (0, 0, 0)).save(shot)
    result = peekbot("chat", "--demo", "--image", str(shot), "hi", env=base_env)
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights" in result.stderr
    assert "Warning" not in result.stderr  # libraries' warnings (transformers' FutureWarning …) go to the debug log
    assert (Path(base_env["PEEKBOT_DATA_DIR"]) / "demo-model" / "qwen3_vl" / "config.json").exists()
    assert result.stdout.strip()


def test_chat_piped_into_a_reader_that_leaves_early_ends_at_once(tmp_path: Path, tiny_qwen3_dir: Path,
                                                                 base_env: dict[str, str]) -> None:
    """``peekbot chat … | head -c 5``: when the reader goes away the answer stops and chat exits, no traceback."""
    shot = tmp_path / "shot.png"
    Image.new("RGB", (400, 300), (20, 30, 200)).save(shot)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEKBOT_", "SLACK_", "FEISHU_"))}
    env.update(base_env, PEEKBOT_MODEL=str(tiny_qwen3_dir), PEEKBOT_MAX_NEW_TOKENS="400")
    chat = subprocess.Popen([sys.executable, "-m", "bot.cli", "chat", "--image", str(shot), "describe it"], cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert chat.stdout is not None and chat.stderr is not None
    first = chat.stdout.read(5)  # the reader takes the first words and leaves
    chat.stdout.close()
    try:
        code = chat.wait(timeout=120)
    finally:
        chat.kill()
    stderr = chat.stderr.read().decode(errors="replace")
    assert first
    assert code == 1, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_chat_reports_a_bad_file_and_exits_non_zero(tmp_path: Path, tiny_qwen3_dir: Path,
                                                    base_env: dict[str, str]) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    result = peekbot("chat", "--image", str(broken), "what is it?",
                     env={**base_env, "PEEKBOT_MODEL": str(tiny_qwen3_dir)})
    assert result.returncode == 1
    assert result.stdout.startswith("peekbot: ")
    missing = peekbot("chat", "--image", str(tmp_path / "nope.png"), "what?",
                      env={**base_env, "PEEKBOT_MODEL": str(tiny_qwen3_dir)})
    assert missing.returncode == 1 and "There is no file at" in missing.stdout


def test_run_without_any_platform_refuses_clearly(base_env: dict[str, str]) -> None:
    result = peekbot("run", env=base_env, timeout=60)
    assert result.returncode == 2
    assert "no platform is configured" in result.stderr
    assert "SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Slack), or FEISHU_APP_ID and FEISHU_APP_SECRET" in result.stderr


def test_doctor_flags_a_malformed_slack_token(tmp_path: Path, tiny_qwen3_dir: Path,
                                              base_env: dict[str, str]) -> None:
    env = {**base_env, "PEEKBOT_MODEL": str(tiny_qwen3_dir), "SLACK_BOT_TOKEN": "xoxp-wrong",
           "SLACK_APP_TOKEN": "xapp-1"}
    result = peekbot("doctor", env=env, timeout=60)
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN should start with xoxb-" in result.stdout
    assert "qwen3_vl" in result.stdout  # the model check read the local checkpoint


def test_tiny_model_command_writes_a_loadable_checkpoint(tmp_path: Path, base_env: dict[str, str]) -> None:
    target = tmp_path / "tiny"
    result = peekbot("tiny-model", str(target), "--arch", "qwen2_5_vl", env=base_env)
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (target / name).exists(), name
