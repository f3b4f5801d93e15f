"""Real-size Qwen-VL architectures with random weights, built directly on a device.

GPU timings depend on the shapes, not on the weights, so ``peekbot bench --random-arch qwen2_5_vl_7b``
builds the published architecture in bf16 with random values: no download, nothing saved. Answers are
noise; latency, throughput and memory are real. The numbers below are those of the public ``config.json``
files of the named checkpoints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bot.settings import EngineSettings
    from inference.loader import LoadedModel

logger = logging.getLogger(__name__)

Family = Literal["qwen2_5_vl", "qwen3_vl"]


@dataclass(frozen=True, slots=True)
class ArchSpec:
    """The dimensions of one published checkpoint (text decoder + vision tower)."""

    checkpoint: str
    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    rope_theta: float
    mrope_section: tuple[int, int, int]
    max_position_embeddings: int
    vision_depth: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_num_heads: int
    patch_size: int
    # Qwen2.5-VL: windowed attention with a few full-attention blocks. Qwen3-VL: deepstack taps.
    vision_special_blocks: tuple[int, ...]
    vision_num_position_embeddings: int = 0


REAL_ARCHS: dict[str, ArchSpec] = {
    "qwen2_5_vl_7b": ArchSpec(
        checkpoint="Qwen/Qwen2.5-VL-7B-Instruct",
        family="qwen2_5_vl",
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        head_dim=128,
        tie_word_embeddings=False,
        rope_theta=1_000_000.0,
        mrope_section=(16, 24, 24),
        max_position_embeddings=128000,
        vision_depth=32,
        vision_hidden_size=1280,
        vision_intermediate_size=3420,
        vision_num_heads=16,
        patch_size=14,
        vision_special_blocks=(7, 15, 23, 31),
    ),
    "qwen2_5_vl_3b": ArchSpec(
        checkpoint="Qwen/Qwen2.5-VL-3B-Instruct",
        family="qwen2_5_vl",
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        head_dim=128,
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        mrope_section=(16, 24, 24),
        max_position_embeddings=128000,
        vision_depth=32,
        vision_hidden_size=1280,
        vision_intermediate_size=3420,
        vision_num_heads=16,
        patch_size=14,
        vision_special_blocks=(7, 15, 23, 31),
    ),
    "qwen3_vl_8b": ArchSpec(
        checkpoint="Qwen/Qwen3-VL-8B-Instruct",
        family="qwen3_vl",
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=False,
        rope_theta=5_000_000.0,
        mrope_section=(24, 20, 20),
        max_position_embeddings=262144,
        vision_depth=27,
        vision_hidden_size=1152,
        vision_intermediate_size=4304,
        vision_num_heads=16,
        patch_size=16,
        vision_special_blocks=(8, 16, 24),
        vision_num_position_embeddings=2304,
    ),
    "qwen3_vl_4b": ArchSpec(
        checkpoint="Qwen/Qwen3-VL-4B-Instruct",
        family="qwen3_vl",
        vocab_size=151936,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        tie_word_embeddings=True,
        rope_theta=5_000_000.0,
        mrope_section=(24, 20, 20),
        max_position_embeddings=262144,
        vision_depth=24,
        vision_hidden_size=1024,
        vision_intermediate_size=4096,
        vision_num_heads=16,
        patch_size=16,
        vision_special_blocks=(5, 11, 17),
        vision_num_position_embeddings=2304,
    ),
}

MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


def arch_config(name: str, tokenizer):  # -> PretrainedConfig
    """The transformers config of ``REAL_ARCHS[name]``, special token ids taken from ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    from inference.tiny import vision_token_ids

    spec = _spec(name)
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    token_ids = vision_token_ids(tokenizer)
    text = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=1e-6,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    rope = {"rope_type": "default", "mrope_section": list(spec.mrope_section), "rope_theta": spec.rope_theta}
    vision = dict(
        depth=spec.vision_depth,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_heads=spec.vision_num_heads,
        out_hidden_size=spec.hidden_size,
        patch_size=spec.patch_size,
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
    )
    if spec.family == "qwen2_5_vl":
        vision.update(window_size=112, fullatt_block_indexes=list(spec.vision_special_blocks), hidden_act="silu")
        text["rope_parameters"] = rope
        return Qwen2_5_VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=spec.tie_word_embeddings, **token_ids
        )
    vision.update(
        num_position_embeddings=spec.vision_num_position_embeddings,
        deepstack_visual_indexes=list(spec.vision_special_blocks),
        hidden_act="gelu_pytorch_tanh",
    )
    text["head_dim"] = spec.head_dim
    text["rope_parameters"] = {**rope, "mrope_interleaved": True}
    return Qwen3VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=spec.tie_word_embeddings, **token_ids
    )


def _spec(name: str) -> ArchSpec:
    try:
        return REAL_ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(REAL_ARCHS)}") from None


def build_random_arch(name: str, settings: EngineSettings, seed: int = 0, tokenizer: Any = None) -> LoadedModel:
    """Build ``REAL_ARCHS[name]`` with random weights (bf16 unless ``settings.dtype`` says otherwise)
    directly on ``settings.device`` and wrap it for the engine.

    Uses the real Qwen tokenizer (``tokenizer``, or built by ``inference.tiny.build_tokenizer``) and a
    PIL image processor with the real patch size and the pixel budget of ``settings``.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2VLImageProcessorPil

    from inference.loader import configure_cuda_allocator, resolve_attn_implementation, resolve_device, wrap_model
    from inference.tiny import build_tokenizer

    spec = _spec(name)
    configure_cuda_allocator()
    device = resolve_device(settings.device)
    dtype = torch.bfloat16 if settings.dtype == "auto" else getattr(torch, settings.dtype)
    attn = resolve_attn_implementation(settings.attn_implementation, device, dtype)
    if tokenizer is None:
        tokenizer = build_tokenizer()
    config = arch_config(name, tokenizer)
    started = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn)
    model.eval()
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=spec.patch_size,
        merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        size={"shortest_edge": settings.min_pixels, "longest_edge": settings.max_pixels},
    )
    logger.info(
        "built random %s (%s dimensions) on %s in %.1f s", name, spec.checkpoint, device, time.perf_counter() - started
    )
    loaded = wrap_model(model, tokenizer, image_processor, name=f"random:{name}")
    loaded.device = device
    loaded.attn_implementation = attn
    return loaded
