"""Turn a question (images, history, system prompt) into model inputs.

The tokenizer's chat template renders one ``<|vision_start|><|image_pad|><|vision_end|>`` per image;
the image processor turns each image into patches and a ``(t, h, w)`` patch grid; each
``<|image_pad|>`` is then expanded to ``t·h·w // merge_size²`` copies, one per image token the
vision encoder will produce. This is what the multimodal processor class would do,
without its torchvision dependency.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.engine import ChatTurn, GenerationRequest

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

IMAGE_PAD = "<|image_pad|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
LANGUAGE_RULE = "Always answer in the language of the question."


def with_language_rule(system_prompt: str) -> str:
    """The system prompt, ending with the rule to answer in the asker's language unless it already says so."""
    text = system_prompt.strip()
    if "language of the question" in text.lower():
        return text
    return f"{text} {LANGUAGE_RULE}".strip()


INSTRUCTIONS_HEADER = (
    "Instructions from the admins of this channel (follow them; where they differ from the rules above, "
    "they win):"
)


def system_text(system_prompt: str, instructions: str = "") -> str:
    """The system message: the system prompt with the language rule, then a channel's ``instructions`` (if any)
    under :data:`INSTRUCTIONS_HEADER`, last so that an instruction such as "answer in Japanese" wins."""
    text = with_language_rule(system_prompt)
    if not instructions.strip():
        return text
    return f"{text}\n\n{INSTRUCTIONS_HEADER}\n{instructions.strip()}"


def build_messages(
    question: str,
    image_count: int,
    history: Sequence[ChatTurn] = (),
    system_prompt: str = "",
    instructions: str = "",
) -> list[dict[str, Any]]:
    """Chat-template messages: system (with a channel's ``instructions``), earlier turns (a user turn with the
    pictures first shown with it first: ``ChatTurn.images``), then the question with its ``image_count`` images
    first."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": system_text(system_prompt, instructions)}]}
    ]
    for turn in history:
        pictures: list[dict[str, Any]] = [{"type": "image"} for _ in range(turn.images)]
        messages.append({"role": turn.role, "content": [*pictures, {"type": "text", "text": turn.text}]})
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(image_count)]
    content.append({"type": "text", "text": question})
    messages.append({"role": "user", "content": content})
    return messages


def chat_template_problem(tokenizer: Any) -> str | None:
    """Why ``tokenizer``'s chat template cannot prompt this engine, or None: it must render a question with one
    picture as one ``<|image_pad|>`` (a text-only template would silently leave the picture out)."""
    try:
        text = tokenizer.apply_chat_template(build_messages("?", 1), tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja2's TemplateError, or whatever the template itself raises
        return f"it fails on a question with a picture ({exc})"
    if not isinstance(text, str) or text.count(IMAGE_PAD) != 1:
        return f"it does not place pictures (no {IMAGE_PAD} for a picture)"
    return None


def expand_image_pads(input_ids: Sequence[int], image_token_id: int, counts: Sequence[int]) -> list[int]:
    """Repeat the i-th ``image_token_id`` ``counts[i]`` times; the number of pads must equal ``len(counts)``."""
    found = sum(1 for token in input_ids if token == image_token_id)
    if found != len(counts):
        raise ValueError(f"the prompt has {found} image placeholders for {len(counts)} images")
    expanded: list[int] = []
    index = 0
    for token in input_ids:
        if token == image_token_id:
            expanded.extend([image_token_id] * counts[index])
            index += 1
        else:
            expanded.append(token)
    return expanded


def resized_size(width: int, height: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` the Qwen-VL image processors resize a picture to: multiples of ``factor`` (patch × merge)
    near the picture's own sides, within ``[min_pixels, max_pixels]`` (their ``smart_resize`` rule; the tests check
    it against the processor)."""
    if max(width, height) > 200 * min(width, height):
        raise ValueError(f"a {width}×{height} picture is too narrow for the image processor")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


@dataclass
class PreparedPrompt:
    """Model inputs for one request (unpadded), built for a given pixel budget. ``pixel_values`` is None for a
    prompt without pictures, or one prepared without patches (``PromptBuilder.prepare(patches=False)``)."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    image_tokens: int
    max_pixels: int

    @property
    def prompt_tokens(self) -> int:
        """Prompt length including image tokens."""
        return len(self.input_ids)


class PromptBuilder:
    """Renders and tokenizes requests for one loaded model. Safe to call from several threads."""

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any,
        *,
        merge_size: int,
        system_prompt: str,
        min_pixels: int,
        max_pixels: int,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.merge_size = merge_size
        self.system_prompt = system_prompt
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.dtype = dtype
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_PAD))
        self._tokenizer_lock = threading.Lock()

    def render(self, request: GenerationRequest) -> str:
        """The chat-template text with one ``<|image_pad|>`` per image."""
        messages = build_messages(
            request.question,
            request.question_images,
            request.history,
            request.system_prompt if request.system_prompt is not None else self.system_prompt,
            request.instructions,
        )
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_text(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def process_images(self, images: Sequence[Image], max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch-aligned resize to ``[min_pixels, max_pixels]`` and patchify: ``(pixel_values, image_grid_thw)``."""
        floor = min(self.min_pixels, max_pixels)
        out = self.image_processor(
            images=list(images),
            size={"shortest_edge": floor, "longest_edge": max_pixels},
            return_tensors="pt",
        )
        pixel_values = out["pixel_values"]
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        return pixel_values, out["image_grid_thw"]

    def image_grids(self, images: Sequence[Image], max_pixels: int) -> torch.Tensor:
        """Each picture's ``(t, h, w)`` patch grid at ``max_pixels``, as ``process_images`` makes it, without
        making the patches."""
        import torch

        patch = int(getattr(self.image_processor, "patch_size", 0) or 0)
        if patch <= 0:
            raise ValueError("the image processor names no patch size")
        floor = min(self.min_pixels, max_pixels)
        rows = []
        for image in images:
            width, height = resized_size(
                image.width, image.height, factor=patch * self.merge_size, min_pixels=floor, max_pixels=max_pixels
            )
            rows.append([1, height // patch, width // patch])
        return torch.tensor(rows, dtype=torch.long)

    def prepare(
        self, request: GenerationRequest, *, max_pixels: int | None = None, patches: bool = True
    ) -> PreparedPrompt:
        """Inputs for ``request`` with every image within ``max_pixels`` (default: the configured budget). With
        ``patches=False`` only the grids are worked out (cheap): for pictures whose features the engine has kept;
        :meth:`with_patches` adds the patches later."""
        budget = self.max_pixels if max_pixels is None else max_pixels
        ids = self.encode_text(self.render(request))
        if not request.images:
            return PreparedPrompt(ids, None, None, 0, budget)
        if patches:
            pixel_values, grid = self.process_images(request.images, budget)
        else:
            pixel_values, grid = None, self.image_grids(request.images, budget)
        counts = [int(row.prod()) // self.merge_size**2 for row in grid]
        expanded = expand_image_pads(ids, self.image_token_id, counts)
        return PreparedPrompt(expanded, pixel_values, grid, sum(counts), budget)

    def with_patches(self, prepared: PreparedPrompt, images: Sequence[Image]) -> PreparedPrompt:
        """``prepared`` (made with ``patches=False``) with its pictures' patches."""
        if prepared.pixel_values is not None or prepared.image_grid_thw is None:
            return prepared
        pixel_values, grid = self.process_images(images, prepared.max_pixels)
        if grid.tolist() != prepared.image_grid_thw.tolist():
            raise ValueError(f"patch grids {grid.tolist()} differ from {prepared.image_grid_thw.tolist()}")
        return replace(prepared, pixel_values=pixel_values)

    def image_patches(self, image: Image, max_pixels: int) -> torch.Tensor:
        """One picture's patches at ``max_pixels``."""
        return self.process_images([image], max_pixels)[0]
