"""Checkpoints as they are published: Qwen's own file layouts, chat templates wherever they live, the torchvision
("Fast") image processor class declared, sampling settings in ``generation_config.json``."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bot.engine import GenerationRequest
from bot.errors import EngineUnavailable
from bot.settings import Settings
from inference.checks import engine_checks
from inference.loader import find_chat_template, load_tokenizer
from inference.tiny import build_tiny_model
from inference.tiny_published import FILES
from tests.inference.test_engine_helpers import WAIT_S, collect, load_tiny, paused, running_engine
from tests.ops.test_cli import peekbot
from tests.support.gpu_faults import OutOfMemoryFaults

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


@pytest.fixture(scope="module")
def published_qwen25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Laid out like Qwen/Qwen2.5-VL-7B-Instruct (flat config.json, legacy weight names, five shards)."""
    return build_tiny_model(tmp_path_factory.mktemp("published") / "qwen2_5_vl", "qwen2_5_vl", layout="published")


@pytest.fixture(scope="module")
def saved_through_processor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Laid out like Qwen/Qwen3-VL-4B-Instruct (the Fast image processor class declared, sampling settings), but with
    the chat template only in chat_template.json, as a checkpoint saved through a processor has it."""
    directory = tmp_path_factory.mktemp("processor") / "qwen3_vl"
    return build_tiny_model(directory, "qwen3_vl", layout="processor_template")


@pytest.mark.parametrize(("fixture", "arch"), [("published_qwen25", "qwen2_5_vl"),
                                               ("saved_through_processor", "qwen3_vl")])  # fmt: skip
def test_the_published_layouts_load_every_weight(fixture: str, arch: str, request: pytest.FixtureRequest) -> None:
    from transformers import AutoModelForImageTextToText

    directory: Path = request.getfixturevalue(fixture)
    assert sorted(path.name for path in directory.iterdir()) == sorted(FILES[arch])
    _, info = AutoModelForImageTextToText.from_pretrained(directory, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights: every published name maps


@pytest.mark.parametrize("fixture", ["published_qwen25", "saved_through_processor"])
def test_peekbot_chat_answers_from_a_published_layout(fixture: str, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:  # fmt: skip
    directory: Path = request.getfixturevalue(fixture)
    shot = tmp_path / "shot.png"
    Image.new("RGB", (320, 200), (30, 120, 200)).save(shot)
    env = {"PEEKBOT_DATA_DIR": str(tmp_path / "data"), "PEEKBOT_MAX_NEW_TOKENS": "12", "PEEKBOT_HTTP_PORT": "0",
           "PEEKBOT_MAX_PIXELS": str(256 * 256), "PEEKBOT_MODEL": str(directory)}  # fmt: skip
    result = peekbot("chat", "--image", str(shot), "what is on this screen?", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "chat_template is not set" not in result.stderr


def test_doctor_names_the_template_file_the_image_processor_and_the_sampling(
    saved_through_processor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEEKBOT_MODEL", str(saved_through_processor))
    monkeypatch.delenv("PEEKBOT_BACKEND", raising=False)
    checks = {check.name: check for check in engine_checks(Settings())}
    assert checks["chat template"].detail == "from chat_template.json"
    assert checks["image processor"].detail.startswith("Qwen2VLImageProcessorPil (preprocessor_config.json declares "
                                                       "Qwen2VLImageProcessorFast")  # fmt: skip
    assert checks["sampling"].detail == (
        "sampled: temperature 0.7, top_k 20, top_p 0.8 (the checkpoint's generation config; PEEKBOT_SAMPLING=auto)"
    )
    assert all(checks[name].status == "OK" for name in ("chat template", "image processor", "sampling"))
    monkeypatch.setenv("PEEKBOT_SAMPLING", "greedy")
    greedy = next(check for check in engine_checks(Settings()) if check.name == "sampling")
    assert greedy.detail == "greedy (PEEKBOT_SAMPLING=greedy)"


def _write(directory: Path, name: str, content: str | dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


def test_the_chat_template_is_found_where_the_checkpoint_keeps_it(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model"
    _write(checkpoint, "tokenizer_config.json", {"tokenizer_class": "Qwen2Tokenizer"})
    assert find_chat_template(str(checkpoint)) is None
    _write(checkpoint, "tokenizer_config.json", {"chat_template": "from the tokenizer"})
    assert find_chat_template(str(checkpoint)).source == "tokenizer_config.json"
    _write(checkpoint, "chat_template.jinja", "from the jinja file")
    assert find_chat_template(str(checkpoint)).text == "from the jinja file"  # the tokenizer's own order
    _write(checkpoint, "chat_template.json", {"chat_template": "from the processor"})
    found = find_chat_template(str(checkpoint))
    assert (found.source, found.text) == ("chat_template.json", "from the processor")  # the processor's order
    _write(checkpoint, "chat_template.json", "{not json")
    with pytest.raises(ValueError, match=r"the model's chat_template.json cannot be read"):
        find_chat_template(str(checkpoint))


def _tokenizer_only(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, target / name)
    return target


def test_a_checkpoint_without_a_usable_template_is_refused_with_a_reason(saved_through_processor: Path,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    bare = _tokenizer_only(saved_through_processor, tmp_path / "bare")
    missing = "has no chat template: none of chat_template.json, chat_template.jinja, tokenizer_config.json holds one"
    with pytest.raises(EngineUnavailable, match=re.escape(missing)):
        load_tokenizer(str(bare))
    _write(bare, "chat_template.json", {"chat_template": "{% for m in messages %}{{ m['role'] }}{% endfor %}"})
    with pytest.raises(EngineUnavailable, match=r"chat_template\.json cannot be used: it does not place pictures"):
        load_tokenizer(str(bare))
    shutil.copy(saved_through_processor / "chat_template.json", bare / "chat_template.json")
    tokenizer, source = load_tokenizer(str(bare))
    assert source == "chat_template.json" and tokenizer.padding_side == "left"


def _ask(job_id: str) -> GenerationRequest:
    return GenerationRequest(question="Describe the screen.", max_new_tokens=12, min_new_tokens=12, job_id=job_id)


async def test_sampled_answers_follow_their_seed_also_through_an_out_of_memory_retry(saved_through_processor: Path):
    async with running_engine(saved_through_processor, max_batch_size=2) as engine:
        assert engine.describe()["sampling"] == "sampled: temperature 0.7, top_k 20, top_p 0.8"
        alone = [await asyncio.wait_for(engine.submit(_ask(job)).text(), WAIT_S) for job in ("slack:1", "slack:2")]
        assert await asyncio.wait_for(engine.submit(_ask("slack:1")).text(), WAIT_S) == alone[0]
        others = [await asyncio.wait_for(engine.submit(_ask(f"slack:{n}")).text(), WAIT_S) for n in range(3, 6)]
        assert len({*alone, *others}) > 1, "other questions draw other numbers"
        # Both rows stream three tokens together; feeding the third runs out of memory and the batch is split.
        model = load_tiny(str(saved_through_processor)).model
        with OutOfMemoryFaults(model, step_fails=lambda rows, count: rows == 2 and count == 3) as faults:
            async with paused(engine):
                streams = [engine.submit(_ask(job)) for job in ("slack:1", "slack:2")]
            results = [await asyncio.wait_for(collect(stream), WAIT_S) for stream in streams]
    assert faults.steps[:3] == [2, 2, 2] and engine.stats().oom_events == 1
    for (chunks, text), expected in zip(results, alone, strict=True):
        assert "".join(chunks) == text == expected  # the retried row wrote the text it had sent, and went on


async def test_greedy_setting_ignores_the_checkpoints_sampling(saved_through_processor: Path):
    async with running_engine(saved_through_processor, sampling="greedy") as engine:
        assert engine.describe()["sampling"] == "greedy"
        texts = {await asyncio.wait_for(engine.submit(_ask(f"slack:{n}")).text(), WAIT_S) for n in range(3)}
    assert len(texts) == 1
