"""Tiny checkpoints laid out like the published ``Qwen/Qwen2.5-VL-7B-Instruct`` and ``Qwen/Qwen3-VL-4B-Instruct``.

What the layout is based on: the file lists of the two Hugging Face repositories and their configuration files
(``config.json``, ``generation_config.json``, ``preprocessor_config.json``, ``video_preprocessor_config.json``,
``tokenizer_config.json``, ``chat_template.json``) as Qwen published them, whose keys and structure are kept here
with tiny sizes:

* Qwen2.5-VL-7B-Instruct: ``chat_template.json``, ``config.json`` (the flat, pre-transformers-4.52 form: text keys at
  the top, ``rope_scaling`` of type ``mrope``), ``generation_config.json`` (``do_sample`` with ``top_k`` 1 and a
  repetition penalty of 1.05), ``merges.txt``, five weight shards ``model-0000N-of-00005.safetensors`` with the
  legacy weight names (``model.layers.…``, ``visual.blocks.…``) and ``model.safetensors.index.json``,
  ``preprocessor_config.json`` (``Qwen2VLImageProcessor`` with ``min_pixels``/``max_pixels``), ``tokenizer.json``,
  ``tokenizer_config.json`` (``Qwen2Tokenizer``, the template inline as well), ``vocab.json``.
* Qwen3-VL-4B-Instruct: the same files with two shards and the current weight names, a nested ``config.json``
  (``text_config``/``vision_config``, ``rope_scaling`` with interleaved mRoPE), sampling in
  ``generation_config.json`` (temperature 0.7, ``top_k`` 20, ``top_p`` 0.8), a preprocessor that declares the
  torchvision class ``Qwen2VLImageProcessorFast``, and ``video_preprocessor_config.json``.

The repositories' ``README.md`` and ``.gitattributes`` are left out (nothing reads them), and so are the templates'
tool-calling branches. The templates below are written for these checkpoints in the published templates' form: one
``<|vision_start|><|image_pad|><|vision_end|>`` per image, ChatML turns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

QWEN25_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN3_VL_TEMPLATE = r"""
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].content is string %}
        {{- messages[0].content }}
    {%- else %}
        {%- for content in messages[0].content %}
            {%- if 'text' in content %}{{- content.text }}{%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' or message.role == 'assistant' %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}
                    {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}""".strip()

EXTRA_TOKENS = {
    "qwen2_5_vl": [
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    ],
}
EXTRA_TOKENS["qwen3_vl"] = [*EXTRA_TOKENS["qwen2_5_vl"], "<tool_response>", "</tool_response>", "<think>", "</think>"]
"""The vocabulary's ordinary added tokens after the special ones (151657 …), as the published tokenizers have them."""

SHARDS = {"qwen2_5_vl": 5, "qwen3_vl": 2}

FILES = {
    "qwen2_5_vl": [
        "chat_template.json", "config.json", "generation_config.json", "merges.txt",
        *[f"model-{i:05d}-of-00005.safetensors" for i in range(1, 6)], "model.safetensors.index.json",
        "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
    ],
    "qwen3_vl": [
        "chat_template.json", "config.json", "generation_config.json", "merges.txt",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "video_preprocessor_config.json",
        "vocab.json",
    ],
}  # fmt: skip
"""The files of each published layout (the repositories' file lists without README.md and .gitattributes)."""

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _special_ids(tokenizer: Any) -> dict[str, int]:
    names = ["vision_start", "vision_end", "vision_pad", "image_pad", "video_pad"]
    return {name: int(tokenizer.convert_tokens_to_ids(f"<|{name}|>")) for name in names}


def model_config(arch: str, config: Any, tokenizer: Any) -> dict[str, Any]:
    """``config.json`` in the published form, with the tiny model's sizes taken from ``config``."""
    text, vision = config.text_config, config.vision_config
    ids = _special_ids(tokenizer)
    rope = text.rope_parameters
    if arch == "qwen2_5_vl":
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "attention_dropout": 0.0,
            "bos_token_id": text.bos_token_id,
            "eos_token_id": text.eos_token_id,
            "vision_start_token_id": ids["vision_start"],
            "vision_end_token_id": ids["vision_end"],
            "vision_token_id": ids["vision_pad"],
            "image_token_id": ids["image_pad"],
            "video_token_id": ids["video_pad"],
            "hidden_act": "silu",
            "hidden_size": text.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": text.intermediate_size,
            "max_position_embeddings": 128000,
            "max_window_layers": text.num_hidden_layers,
            "model_type": "qwen2_5_vl",
            "num_attention_heads": text.num_attention_heads,
            "num_hidden_layers": text.num_hidden_layers,
            "num_key_value_heads": text.num_key_value_heads,
            "rms_norm_eps": 1e-06,
            "rope_theta": rope["rope_theta"],
            "sliding_window": 32768,
            "tie_word_embeddings": config.tie_word_embeddings,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.41.2",
            "use_cache": True,
            "use_sliding_window": False,
            "vision_config": {
                "depth": vision.depth,
                "hidden_act": "silu",
                "hidden_size": vision.hidden_size,
                "intermediate_size": vision.intermediate_size,
                "num_heads": vision.num_heads,
                "in_chans": 3,
                "out_hidden_size": vision.out_hidden_size,
                "patch_size": vision.patch_size,
                "spatial_merge_size": vision.spatial_merge_size,
                "spatial_patch_size": vision.patch_size,
                "window_size": vision.window_size,
                "fullatt_block_indexes": list(vision.fullatt_block_indexes),
                "tokens_per_second": 2,
                "temporal_patch_size": vision.temporal_patch_size,
            },
            "rope_scaling": {"type": "mrope", "mrope_section": list(rope["mrope_section"])},
            "vocab_size": text.vocab_size,
        }
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "image_token_id": ids["image_pad"],
        "model_type": "qwen3_vl",
        "text_config": {
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": text.bos_token_id,
            "dtype": "bfloat16",
            "eos_token_id": text.eos_token_id,
            "head_dim": text.head_dim,
            "hidden_act": "silu",
            "hidden_size": text.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": text.intermediate_size,
            "max_position_embeddings": 262144,
            "model_type": "qwen3_vl_text",
            "num_attention_heads": text.num_attention_heads,
            "num_hidden_layers": text.num_hidden_layers,
            "num_key_value_heads": text.num_key_value_heads,
            "rms_norm_eps": 1e-06,
            "rope_scaling": {
                "mrope_interleaved": True,
                "mrope_section": list(rope["mrope_section"]),
                "rope_type": "default",
            },
            "rope_theta": rope["rope_theta"],
            "tie_word_embeddings": config.tie_word_embeddings,
            "use_cache": True,
            "vocab_size": text.vocab_size,
        },
        "tie_word_embeddings": config.tie_word_embeddings,
        "transformers_version": "4.57.0.dev0",
        "video_token_id": ids["video_pad"],
        "vision_config": {
            "deepstack_visual_indexes": list(vision.deepstack_visual_indexes),
            "depth": vision.depth,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_size": vision.hidden_size,
            "in_channels": 3,
            "initializer_range": 0.02,
            "intermediate_size": vision.intermediate_size,
            "model_type": "qwen3_vl",
            "num_heads": vision.num_heads,
            "num_position_embeddings": vision.num_position_embeddings,
            "out_hidden_size": vision.out_hidden_size,
            "patch_size": vision.patch_size,
            "spatial_merge_size": vision.spatial_merge_size,
            "temporal_patch_size": vision.temporal_patch_size,
        },
        "vision_end_token_id": ids["vision_end"],
        "vision_start_token_id": ids["vision_start"],
    }


def generation_config(arch: str, tokenizer: Any) -> dict[str, Any]:
    """``generation_config.json`` as published: Qwen2.5-VL's near-greedy settings, Qwen3-VL's sampling."""
    pad = int(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    eos = [int(tokenizer.convert_tokens_to_ids("<|im_end|>")), pad]
    if arch == "qwen2_5_vl":
        return {"bos_token_id": pad, "pad_token_id": pad, "do_sample": True, "eos_token_id": eos,
                "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1,
                "transformers_version": "4.37.0"}  # fmt: skip
    return {"bos_token_id": pad, "pad_token_id": pad, "do_sample": True, "eos_token_id": eos, "top_k": 20,
            "top_p": 0.8, "repetition_penalty": 1.0, "temperature": 0.7, "transformers_version": "4.56.0"}  # fmt: skip


def processor_configs(arch: str, patch: int, min_pixels: int, max_pixels: int) -> dict[str, dict[str, Any]]:
    """``preprocessor_config.json`` (and Qwen3-VL's ``video_preprocessor_config.json``) as published."""
    grid = {"patch_size": patch, "temporal_patch_size": 2, "merge_size": 2}
    if arch == "qwen2_5_vl":
        return {"preprocessor_config.json": {
            "min_pixels": min_pixels, "max_pixels": max_pixels, **grid, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        }}  # fmt: skip
    half = [0.5, 0.5, 0.5]
    return {
        "preprocessor_config.json": {
            "size": {"longest_edge": max_pixels, "shortest_edge": min_pixels}, **grid, "image_mean": half,
            "image_std": half, "processor_class": "Qwen3VLProcessor",
            "image_processor_type": "Qwen2VLImageProcessorFast",
        },
        "video_preprocessor_config.json": {
            "size": {"longest_edge": max_pixels * 2, "shortest_edge": min_pixels}, **grid, "image_mean": half,
            "image_std": half, "processor_class": "Qwen3VLProcessor", "video_processor_type": "Qwen3VLVideoProcessor",
        },
    }  # fmt: skip


def tokenizer_config(arch: str, tokenizer: Any, template: str | None) -> dict[str, Any]:
    """``tokenizer_config.json`` as published (``Qwen2Tokenizer``); ``template`` None leaves the template out."""
    decoder = {
        str(token_id): {"content": token.content, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": token.special}
        for token_id, token in sorted(tokenizer.added_tokens_decoder.items())
    }  # fmt: skip
    config: dict[str, Any] = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [t.content for t in tokenizer.added_tokens_decoder.values()
                                      if t.special and t.content != "<|endoftext|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072 if arch == "qwen2_5_vl" else 262144,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }  # fmt: skip
    if template is not None:
        config["chat_template"] = template
    return dict(sorted(config.items()))


def legacy_weight_name(name: str) -> str:
    """Qwen2.5-VL's published weight names (before transformers 4.52 nested the language model and vision tower)."""
    if name.startswith("model.language_model."):
        return "model." + name.removeprefix("model.language_model.")
    return name.removeprefix("model.")  # model.visual.… → visual.…


def write_weights(directory: Path, arch: str, model: Any) -> None:
    """The weights in the published number of shards, with the published names, and their index."""
    from safetensors.torch import save_file

    tied = bool(model.config.tie_word_embeddings)
    weights = {
        (legacy_weight_name(name) if arch == "qwen2_5_vl" else name): tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if not (tied and name == "lm_head.weight")
    }
    names = sorted(weights)
    count = SHARDS[arch]
    weight_map: dict[str, str] = {}
    for shard in range(count):
        part = names[shard * len(names) // count : (shard + 1) * len(names) // count]
        file = f"model-{shard + 1:05d}-of-{count:05d}.safetensors"
        save_file({name: weights[name] for name in part}, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    _write_json(
        directory / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map}
    )


def write_published(
    directory: Path,
    arch: str,
    model: Any,
    tokenizer: Any,
    *,
    patch: int,
    min_pixels: int,
    max_pixels: int,
    template_in_tokenizer_config: bool = True,
) -> None:
    """Write the checkpoint's files in the published layout (``template_in_tokenizer_config=False``: the template
    only in ``chat_template.json``, as a checkpoint saved through a processor has it)."""
    import torch

    tokenizer.add_tokens(EXTRA_TOKENS[arch])
    template = QWEN25_VL_TEMPLATE if arch == "qwen2_5_vl" else QWEN3_VL_TEMPLATE
    write_weights(directory, arch, model.to(torch.bfloat16))
    _write_json(directory / "config.json", model_config(arch, model.config, tokenizer))
    _write_json(directory / "generation_config.json", generation_config(arch, tokenizer))
    for name, value in processor_configs(arch, patch, min_pixels, max_pixels).items():
        _write_json(directory / name, value)
    tokenizer.backend_tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.backend_tokenizer.model.save(str(directory))  # vocab.json and merges.txt
    config = tokenizer_config(arch, tokenizer, template if template_in_tokenizer_config else None)
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "chat_template.json", {"chat_template": template})
