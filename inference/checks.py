"""``peekbot doctor``'s checks of the engine: the model (or the remote server's settings), what the engine will take
from the checkpoint (chat template, image processor, sampling), and the GPU.

Nothing is downloaded or contacted and no weights are loaded: the checkpoint's files are read from its directory or
the Hugging Face cache, and its image processor is built from ``preprocessor_config.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

from bot.doctor import Check
from bot.settings import Settings
from inference.remote import configuration_problem

SUPPORTED_MODEL_TYPES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"}


def engine_checks(settings: Settings) -> list[Check]:
    """The model's check, then the GPU's (not needed when a remote server runs the model)."""
    if settings.core.backend == "openai":
        return [_check_model(settings), Check("gpu", "OK", "not needed here: the model runs on the remote server")]
    model = _check_model(settings)
    checkpoint = _check_checkpoint(settings) if model.status == "OK" else []
    return [model, *checkpoint, *_check_gpu(settings)]


def _check_model(settings: Settings) -> Check:
    if settings.core.backend == "openai":
        return _check_remote_model(settings)
    model = settings.engine.model
    local = Path(model).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model, "config.json")
        except ValueError:  # huggingface_hub's HFValidationError: not a repo id
            return Check(
                "model", "FAIL", f"{model} is neither a local directory nor a Hugging Face model id (PEEKBOT_MODEL)"
            )
        if not isinstance(cached, str):
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            return Check(
                "model",
                "FAIL" if offline else "WARN",
                f"{model} is not in the Hugging Face cache; it will be downloaded at first start"
                + (" but HF_HUB_OFFLINE=1 forbids that" if offline else ""),
            )
        config_file = Path(cached)
    try:
        model_type = json.loads(config_file.read_text()).get("model_type", "?")
    except (OSError, ValueError) as exc:
        return Check("model", "FAIL", f"cannot read {config_file}: {exc}")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return Check("model", "FAIL", f"{model} is a {model_type} model; supported: {sorted(SUPPORTED_MODEL_TYPES)}")
    return Check("model", "OK", f"{model} ({model_type})")


def _check_checkpoint(settings: Settings) -> list[Check]:
    """Which file the chat template comes from, which image processor class runs, and how tokens are picked."""
    from inference.loader import TEMPLATE_FILES, find_chat_template

    model = settings.engine.model
    try:
        template = find_chat_template(model, download=False)
    except ValueError as exc:
        template_check = Check("chat template", "FAIL", str(exc))
    else:
        template_check = (
            Check("chat template", "OK", f"from {template.source}")
            if template is not None
            else Check("chat template", "FAIL", f"none of {', '.join(TEMPLATE_FILES)} holds one: the model cannot be "
                       "prompted; copy the base model's chat_template.json into its directory")
        )  # fmt: skip
    return [template_check, _check_image_processor(model), _check_sampling(settings)]


def _json_file(model: str, name: str) -> dict:
    """A JSON file of the checkpoint (``{}`` when it has none or it cannot be read)."""
    from inference.loader import checkpoint_file

    path = checkpoint_file(model, name, download=False)
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_image_processor(model: str) -> Check:
    from inference.loader import load_image_processor

    declared = _json_file(model, "preprocessor_config.json").get("image_processor_type")
    try:
        used = type(load_image_processor(model, download=False)).__name__
    except (OSError, ValueError, ImportError) as exc:
        return Check("image processor", "FAIL", f"cannot be built from preprocessor_config.json ({exc})")
    if not declared or declared == used:
        return Check("image processor", "OK", used)
    torchvision = "" if importlib.util.find_spec("torchvision") else "; torchvision is not installed"
    return Check("image processor", "OK", f"{used} (preprocessor_config.json declares {declared}{torchvision})")


def _check_sampling(settings: Settings) -> Check:
    from inference.sampling import settings_from_generation_config

    mode = settings.engine.sampling
    sampling = settings_from_generation_config(_json_file(settings.engine.model, "generation_config.json"), mode)
    detail = f"{sampling.describe()} ({sampling.reason}" + ("; PEEKBOT_SAMPLING=auto)" if mode == "auto" else ")")
    if sampling.ignored:
        return Check("sampling", "WARN", f"{detail}; not applied here: {', '.join(sampling.ignored)}")
    return Check("sampling", "OK", detail)


def _check_remote_model(settings: Settings) -> Check:
    """``PEEKBOT_BACKEND=openai``: the settings the remote backend needs (the server itself is not contacted)."""
    from urllib.parse import urlsplit

    core = settings.core
    problem = configuration_problem(core)
    if problem:
        return Check("model", "FAIL", problem)
    key = "API key set" if core.openai_api_key and core.openai_api_key.get_secret_value() else "no API key"
    detail = (
        f"remote OpenAI-compatible server {core.openai_base_url}, model {core.openai_model}, {key}, "
        f"{core.openai_max_concurrency} answers at a time"
    )
    if not urlsplit(core.openai_base_url or "").path.rstrip("/").endswith("/v1"):
        return Check(
            "model",
            "WARN",
            detail + "; the URL does not end in /v1, where vLLM, SGLang and LMDeploy serve "
            "the API (the bot posts to <PEEKBOT_OPENAI_BASE_URL>/chat/completions)",
        )
    return Check("model", "OK", detail)


def _check_gpu(settings: Settings) -> Iterator[Check]:
    from inference.devices import cuda_devices, optional_packages, torch_version

    devices = cuda_devices()
    wanted = settings.engine.device
    if devices:
        for device in devices:
            yield Check("gpu", "OK", f"{device.name}, {device.total_gib:.0f} GiB, compute {device.capability}")
    else:
        status = "FAIL" if wanted.startswith("cuda") else "WARN"
        yield Check("gpu", status, f"no CUDA device (torch {torch_version()}); answers on CPU are slow")
    extras = optional_packages()
    yield Check("extras", "OK", ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in extras.items()))
    if settings.engine.quantization != "none" and not (devices and extras["bitsandbytes"]):
        yield Check("quantization", "FAIL", f"{settings.engine.quantization} loading needs a CUDA GPU and bitsandbytes")
