"""Load a Qwen-VL checkpoint (HF id or local directory) for in-process generation.

Uses ``AutoModelForImageTextToText`` + ``AutoTokenizer`` + ``AutoImageProcessor``: the multimodal
*processor* classes need torchvision, which peekbot does not depend on; the image processor's PIL backend does not
(a checkpoint that declares the torchvision "Fast" class, as Qwen3-VL's does, gets the PIL class where torchvision
is missing). Files read: ``config.json``, the weights, ``generation_config.json`` (sampling, ``inference/sampling.py``),
``preprocessor_config.json``, the tokenizer's files, and the chat template from wherever the checkpoint keeps it
(:data:`TEMPLATE_FILES`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import EngineUnavailable
from inference.prompts import chat_template_problem

if TYPE_CHECKING:
    import torch

    from bot.settings import EngineSettings

logger = logging.getLogger(__name__)

ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")
DEFAULT_ALLOC_CONF = "expandable_segments:True"


@dataclass
class LoadedModel:
    """A model ready for generation, with what the engine needs to feed it."""

    model: Any
    tokenizer: Any
    image_processor: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    patch_size: int
    merge_size: int
    attn_implementation: str
    quantization: str

    @property
    def image_factor(self) -> int:
        """Side of the pixel square that becomes one image token (28 for Qwen2.5-VL, 32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size


def configure_cuda_allocator() -> None:
    """Ask for expandable segments (less fragmentation) unless the user configured the allocator."""
    if any(os.environ.get(name) for name in ALLOC_CONF_VARS):
        return
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = DEFAULT_ALLOC_CONF
    import torch

    if torch.cuda.is_initialized():
        logger.warning("CUDA was initialised before the allocator was configured; expandable segments stay off")


def resolve_device(setting: str) -> torch.device:
    """``auto`` → the first GPU when torch sees one, else CPU; ``cuda``, ``cuda:N`` and ``cpu`` as given."""
    import torch

    value = setting.strip().lower()
    if value == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise EngineUnavailable(
            f"PEEKBOT_DEVICE={setting!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise EngineUnavailable(f"PEEKBOT_DEVICE={setting!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise EngineUnavailable(
            f"PEEKBOT_DEVICE={setting} asks for a GPU, but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})"
        )
    index = device.index if device.index is not None else 0
    if index >= torch.cuda.device_count():
        raise EngineUnavailable(
            f"PEEKBOT_DEVICE={setting} names GPU {index}, but only {torch.cuda.device_count()} are visible"
        )
    return torch.device("cuda", index)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (else fp16), fp32 on CPU; an explicit setting wins."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def flash_attention_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def resolve_attn_implementation(setting: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto`` → flash_attention_2 on a GPU when the package is installed (half precision), else sdpa."""
    import torch

    half = dtype in (torch.float16, torch.bfloat16)
    if setting == "auto":
        if device.type == "cuda" and half and flash_attention_available():
            return "flash_attention_2"
        return "sdpa"
    if setting == "flash_attention_2":
        if device.type != "cuda":
            raise EngineUnavailable("flash-attention 2 needs a CUDA GPU; set PEEKBOT_ATTN_IMPLEMENTATION=sdpa")
        if not flash_attention_available():
            raise EngineUnavailable(
                "flash-attention 2 was requested but the flash-attn package is not installed; "
                "install it or set PEEKBOT_ATTN_IMPLEMENTATION=sdpa"
            )
        if not half:
            raise EngineUnavailable("flash-attention 2 needs bfloat16 or float16 weights; set PEEKBOT_DTYPE=auto")
    return setting


def quantization_config(setting: str, device: torch.device, dtype: torch.dtype) -> Any | None:
    """A ``BitsAndBytesConfig`` for ``4bit``/``8bit``, or an error sentence saying why it cannot work here."""
    if setting == "none":
        return None
    if device.type != "cuda":
        raise EngineUnavailable(
            f"{setting} loading (bitsandbytes) needs a CUDA GPU, but the model would run on {device}; "
            "set PEEKBOT_QUANTIZATION=none"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineUnavailable(
            f"{setting} loading needs the bitsandbytes package, which is not installed; "
            "`pip install bitsandbytes` or set PEEKBOT_QUANTIZATION=none"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if setting == "4bit":
        compute = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


TEMPLATE_FILES = ("chat_template.json", "chat_template.jinja", "tokenizer_config.json")
"""Where a checkpoint keeps its chat template, in the order they are tried: the multimodal processor's order (as
transformers' ``AutoProcessor`` and vLLM use it), then the tokenizer's own. ``AutoTokenizer`` reads only the last two,
so a checkpoint saved through a processor (the template only in ``chat_template.json``) needs this."""


@dataclass(frozen=True)
class ChatTemplate:
    """A checkpoint's chat template and the file it came from."""

    text: str
    source: str


def checkpoint_file(source: str, name: str, *, download: bool = True) -> Path | None:
    """``name`` of the checkpoint ``source`` (a directory or a Hub id; ``download=False``: the local cache only),
    or None when the checkpoint has no such file."""
    from transformers.utils import cached_file

    found = cached_file(
        source,
        name,
        local_files_only=not download,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return Path(found) if found else None


def _template_in(path: Path, name: str) -> str | None:
    """The template text a template file holds (None: it holds none); ``ValueError`` names a damaged file."""
    try:
        text = path.read_text(encoding="utf-8")
        value = text if name.endswith(".jinja") else json.loads(text).get("chat_template")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise ValueError(f"the model's {name} cannot be read ({exc})") from exc
    if isinstance(value, list):  # named templates, as tokenizer_config.json may hold them
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        value = named.get("default")
    return value if isinstance(value, str) and value.strip() else None


def find_chat_template(source: str, *, download: bool = True) -> ChatTemplate | None:
    """The checkpoint's chat template from the first of :data:`TEMPLATE_FILES` that holds one (``ValueError``: one of
    them is damaged)."""
    for name in TEMPLATE_FILES:
        path = checkpoint_file(source, name, download=download)
        text = _template_in(path, name) if path is not None else None
        if text is not None:
            return ChatTemplate(text, name)
    return None


def load_tokenizer(source: str) -> tuple[Any, str]:
    """The checkpoint's tokenizer (left padding, for batched generation) with the checkpoint's chat template, and
    the file the template came from."""
    from transformers import AutoTokenizer

    try:
        template = find_chat_template(source)
    except ValueError as exc:
        raise EngineUnavailable(str(exc)) from exc
    if template is None:
        raise EngineUnavailable(
            f"the model {source!r} has no chat template: none of {', '.join(TEMPLATE_FILES)} holds one; "
            "copy the base model's chat_template.json into the model's directory"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = template.text
    problem = chat_template_problem(tokenizer)
    if problem:
        raise EngineUnavailable(f"the chat template in the model's {template.source} cannot be used: {problem}")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, template.source


def load_image_processor(source: str, *, download: bool = True) -> Any:
    """The checkpoint's image processor. transformers picks the class from ``preprocessor_config.json``: the PIL
    backend where torchvision is missing, also when the checkpoint declares the torchvision ("Fast") class."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(source, local_files_only=not download)


def _grid_sizes(image_processor: Any, model: Any) -> tuple[int, int]:
    vision = getattr(model.config, "vision_config", None)
    patch = getattr(image_processor, "patch_size", None) or getattr(vision, "patch_size", None)
    merge = getattr(image_processor, "merge_size", None) or getattr(vision, "spatial_merge_size", None)
    if not patch or not merge:
        raise EngineUnavailable("the model has no Qwen-VL image patch/merge size; is it a Qwen-VL checkpoint?")
    return int(patch), int(merge)


def wrap_model(
    model: Any,
    tokenizer: Any,
    image_processor: Any,
    *,
    name: str,
    quantization: str = "none",
) -> LoadedModel:
    """Describe an already built model (device, dtype, grid sizes) for the engine."""
    patch, merge = _grid_sizes(image_processor, model)
    tokenizer.padding_side = "left"
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        name=name,
        device=model.device,
        dtype=model.dtype,
        patch_size=patch,
        merge_size=merge,
        attn_implementation=str(getattr(model.config, "_attn_implementation", None) or "eager"),
        quantization=quantization,
    )


def _check_local_source(source: str) -> None:
    """A path-like model name must exist: without this, a typo turns into a Hub download attempt."""
    path = Path(source).expanduser()
    looks_local = source.startswith(("/", ".", "~")) or path.exists() or source.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        reason = "does not exist" if not path.exists() else "has no config.json"
        raise EngineUnavailable(f"the model {source!r} could not be loaded: the directory {reason}")


def load_model(settings: EngineSettings) -> LoadedModel:
    """Load ``settings.model`` onto ``settings.device`` as the settings say; errors carry a reason."""
    configure_cuda_allocator()
    from transformers import AutoModelForImageTextToText

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    attn = resolve_attn_implementation(settings.attn_implementation, device, dtype)
    quant = quantization_config(settings.quantization, device, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    device_map = getattr(settings, "device_map", None)
    if device_map:
        kwargs["device_map"] = device_map
    elif device.type == "cuda":
        kwargs["device_map"] = {"": device}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs.setdefault("device_map", {"": device})

    _check_local_source(settings.model)
    started = time.perf_counter()
    logger.info("loading %s on %s (%s, attention %s, quantization %s)", settings.model, device, dtype, attn,
                settings.quantization)
    try:
        tokenizer, template_source = load_tokenizer(settings.model)
        image_processor = load_image_processor(settings.model)
        model = AutoModelForImageTextToText.from_pretrained(settings.model, **kwargs)
    except OSError as exc:
        raise EngineUnavailable(f"the model {settings.model!r} could not be loaded ({exc})") from exc
    except ValueError as exc:
        raise EngineUnavailable(f"the model {settings.model!r} is not a supported image-text model ({exc})") from exc
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    loaded = wrap_model(model, tokenizer, image_processor, name=settings.model, quantization=settings.quantization)
    loaded.attn_implementation = attn
    if not device_map:
        loaded.device = device
    elapsed = time.perf_counter() - started
    logger.info("loaded %s in %.1f s (image factor %d, chat template from %s, image processor %s)", settings.model,
                elapsed, loaded.image_factor, template_source, type(image_processor).__name__)
    return loaded


def adopt_transformers_logging() -> None:
    """Send transformers' log records through the project's handler (formatted, filtered and masked like every other
    line) instead of the stderr handler transformers installs for itself."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
