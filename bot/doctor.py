"""``peekbot doctor``: checks configuration, tokens, model and GPU without connecting anywhere."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bot.redact import redact, secret_values
from bot.settings import Settings

SUPPORTED_MODEL_TYPES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Literal["OK", "WARN", "FAIL"]
    detail: str


def data_dir_problem(directory: Path) -> str | None:
    """Why the bot cannot keep its state in ``directory`` (created when missing), or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror or exc}"
    return None


def _check_data_dir(settings: Settings) -> Check:
    directory = Path(settings.core.data_dir).expanduser()
    problem = data_dir_problem(directory)
    return Check("data dir", "FAIL", problem) if problem else Check("data dir", "OK", str(directory))


def _check_platforms(settings: Settings) -> Iterator[Check]:
    slack, feishu = settings.slack, settings.feishu
    if slack.configured:
        assert slack.bot_token is not None and slack.app_token is not None
        bad = [
            f"{var} should start with {prefix}"
            for var, token, prefix in (
                ("SLACK_BOT_TOKEN", slack.bot_token, "xoxb-"),
                ("SLACK_APP_TOKEN", slack.app_token, "xapp-"),
            )
            if not token.get_secret_value().startswith(prefix)
        ]
        yield Check("slack", "FAIL" if bad else "OK", "; ".join(bad) or f"tokens set; API {slack.api_url}")
    elif slack.bot_token or slack.app_token:
        yield Check("slack", "FAIL", "set both SLACK_BOT_TOKEN (xoxb-) and SLACK_APP_TOKEN (xapp-)")
    if feishu.configured:
        yield Check("feishu", "OK", f"app {feishu.app_id} on {feishu.domain}")
    elif feishu.app_id or feishu.app_secret:
        yield Check("feishu", "FAIL", "set both FEISHU_APP_ID and FEISHU_APP_SECRET")
    if not (slack.configured or feishu.configured):
        yield Check("platforms", "WARN", "none configured: `peekbot run` needs Slack or Feishu credentials")


def _check_model(settings: Settings) -> Check:
    if settings.core.backend == "openai":
        return _check_remote_model(settings)
    model = settings.engine.model
    local = Path(model).expanduser()
    if local.is_dir():
        config_file = local / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
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


def _check_remote_model(settings: Settings) -> Check:
    """``PEEKBOT_BACKEND=openai``: the settings the remote backend needs (the server itself is not contacted)."""
    from urllib.parse import urlsplit

    from inference.remote import configuration_problem

    core = settings.core
    problem = configuration_problem(core)
    if problem:
        return Check("model", "FAIL", problem)
    key = "API key set" if core.openai_api_key and core.openai_api_key.get_secret_value() else "no API key"
    detail = (f"remote OpenAI-compatible server {core.openai_base_url}, model {core.openai_model}, {key}, "
              f"{core.openai_max_concurrency} answers at a time")
    if not urlsplit(core.openai_base_url or "").path.rstrip("/").endswith("/v1"):
        return Check("model", "WARN", detail + "; the URL does not end in /v1, where vLLM, SGLang and LMDeploy serve "
                     "the API (the bot posts to <PEEKBOT_OPENAI_BASE_URL>/chat/completions)")
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


def run_checks(settings: Settings) -> list[Check]:
    """Every check; credentials in the details (URLs with passwords or keys, token values) are masked."""
    checks = [_check_data_dir(settings), *_check_platforms(settings), _check_model(settings)]
    if settings.core.backend == "openai":
        checks.append(Check("gpu", "OK", "not needed here: the model runs on the remote server"))
    else:
        checks.extend(_check_gpu(settings))
    secrets = secret_values(settings)
    return [Check(check.name, check.status, redact(check.detail, secrets)) for check in checks]
