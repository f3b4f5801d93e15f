"""One prompt's prefill into its own cache, in bounded units, so it can run between decoding steps.

The units, in order: the vision encoder once per image (:meth:`ModelParts.encode_image`, or the image-embedding cache),
then the text in chunks of at most ``chunk_tokens``. Before the first text chunk the prompt's input embeddings are
built once, as the model's own ``forward`` does (token embeddings with each image's features scattered over its
``<|image_pad|>`` tokens), together with its position ids (Qwen-VL's 3-D mRoPE positions from the model's own
``_prepare_position_ids_for_generation``, the ones ``generate`` uses). Each chunk then feeds the language model its
slice of the embeddings and positions; for Qwen3-VL also the slice of the "deepstack" visual features (added to the
hidden states of the first decoder layers at image positions): ``visual_pos_masks`` for the chunk and the features of
the image tokens that fall in it.

With a cached prompt prefix (``inference.prefix_cache``) the row's cache starts with that prefix's keys/values and
only the rest is fed (positions still sliced from the whole prompt's); the vision encoder is skipped when every image
lies inside the prefix.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from inference.prefix_cache import PromptPrefix

logger = logging.getLogger(__name__)


@dataclass
class DecodeRow:
    """One prompt: unpadded token ids, its images (patches and grids) and the answer's minimum length."""

    input_ids: Sequence[int]
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    min_new_tokens: int = 0
    image_keys: Sequence[Hashable] | None = None
    """One image-embedding cache key per image (None: the images are not cached)."""
    patches: Callable[[int], torch.Tensor] | None = None
    """Makes image ``index``'s patches where ``pixel_values`` were not made (its features were kept when the prompt
    was prepared, and have been dropped since)."""


@dataclass(frozen=True)
class ImageFeatures:
    """The vision encoder's output for one image: ``(tokens, hidden)``, plus one such tensor per deepstack layer."""

    embeds: torch.Tensor
    deepstack: tuple[torch.Tensor, ...] = field(default=())


def _joined(value: Any) -> torch.Tensor:
    return torch.cat(list(value)) if isinstance(value, (tuple, list)) else value


def _features_of(output: Any) -> ImageFeatures:
    """``get_image_features``' result for one image, in either of its shapes (an output object; or, in older
    transformers, the embeddings, or ``(embeddings, deepstack features)`` for Qwen3-VL)."""
    if hasattr(output, "pooler_output"):
        embeds, deepstack = output.pooler_output, getattr(output, "deepstack_features", None) or []
    elif isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], list):
        embeds, deepstack = output
    else:
        embeds, deepstack = output, []
    return ImageFeatures(_joined(embeds), tuple(_joined(layer) for layer in deepstack))


def position_ids_for(model: nn.Module, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """The prefill position ids ``generate`` would use: Qwen-VL's [text; t; h; w] rows, or plain positions."""
    prepare = getattr(model, "_prepare_position_ids_for_generation", None)
    if prepare is not None:
        return prepare(input_ids, {"input_ids": input_ids, **kwargs})
    return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]


class ModelParts:
    """The pieces of a transformers Qwen-VL model the engine drives: vision encoder, embeddings, language model."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.backbone = model.base_model
        self.language_model = self.backbone.language_model
        self.embeddings = self.backbone.get_input_embeddings()
        config = model.config
        self.config = config
        self.image_token_id = getattr(config, "image_token_id", None)
        self.video_token_id = getattr(config, "video_token_id", None)
        self.vision_calls = 0
        """Images the vision encoder has run on (the image-embedding cache saves the others)."""
        parameters = inspect.signature(self.language_model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        """The language model's name for its cache argument (``past_key_values`` before transformers 5.x)."""

    def language(self, cache: Any, **inputs: Any) -> Any:
        """One forward of the language model over ``cache`` (``use_cache``), returning its output."""
        return self.language_model(**inputs, use_cache=True, **{self.cache_argument: cache})

    def encode_image(self, pixel_values: torch.Tensor, grid: torch.Tensor) -> ImageFeatures:
        """One image's patches ``(patches, dim)`` and grid ``(1, 3)`` through the vision encoder."""
        self.vision_calls += 1
        output = self.backbone.get_image_features(pixel_values.to(self.device, self.model.dtype), grid.to(self.device))
        return _features_of(output)

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        types = torch.zeros_like(input_ids, dtype=torch.int)
        if self.image_token_id is not None:
            types[input_ids == self.image_token_id] = 1
        if self.video_token_id is not None:
            types[input_ids == self.video_token_id] = 2
        return types

    def positions(self, input_ids: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
        kwargs: dict[str, Any] = {"attention_mask": torch.ones_like(input_ids)}
        if grid is not None:
            kwargs.update(image_grid_thw=grid.to(self.device), mm_token_type_ids=self.token_types(input_ids))
        return position_ids_for(self.model, input_ids, kwargs)


ImageSource = Callable[[DecodeRow, int], ImageFeatures]
"""``(row, image index) -> features``: the vision encoder, or the image-embedding cache in front of it."""


def encode_row_image(parts: ModelParts, row: DecodeRow, index: int) -> ImageFeatures:
    """Image ``index`` of ``row`` through the vision encoder (its slice of the row's patches)."""
    assert row.image_grid_thw is not None
    if row.pixel_values is None:
        assert row.patches is not None, "a row without patches needs a way to make them"
        return parts.encode_image(row.patches(index), row.image_grid_thw[index : index + 1])
    counts = row.image_grid_thw.prod(dim=-1).tolist()
    start = int(sum(counts[:index]))
    patches = row.pixel_values[start : start + int(counts[index])]
    return parts.encode_image(patches, row.image_grid_thw[index : index + 1])


class RowPrefill:
    """The prefill of one prompt into its own ``DynamicCache``, one unit at a time (see the module docstring)."""

    def __init__(
        self, parts: ModelParts, row: DecodeRow, images: ImageSource | None = None, prefix: PromptPrefix | None = None
    ) -> None:
        self.parts = parts
        self.row = row
        self._images = images or (lambda r, i: encode_row_image(parts, r, i))
        self.image_count = 0 if row.image_grid_thw is None else int(row.image_grid_thw.shape[0])
        self.prompt_tokens = len(row.input_ids)
        self.features: list[ImageFeatures] = []
        self.images_done = 0
        self.done_tokens = 0
        self.cache: Any = None
        self.hidden: torch.Tensor | None = None
        """The last prompt position's hidden state ``(1, hidden)`` once the prefill is done."""
        self.last_positions: torch.Tensor | None = None
        self._embeds: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._visual: torch.Tensor | None = None
        self._deepstack: list[torch.Tensor] = []
        self.prefix = prefix
        """A cached prompt prefix this prefill starts from (None: the whole prompt is fed)."""
        if prefix is not None:
            self.done_tokens = prefix.tokens
            if prefix.images == self.image_count:
                self.images_done = self.image_count  # every image lies in the prefix: no features needed

    @property
    def done(self) -> bool:
        return self.hidden is not None

    def run_unit(self, chunk_tokens: int | None) -> bool:
        """Encode the next image, or feed the next text chunk (at most ``chunk_tokens``; None: the rest). Returns
        whether the prefill is done."""
        if self.images_done < self.image_count:
            self.features.append(self._images(self.row, self.images_done))
            self.images_done += 1
            return False
        if self._embeds is None:
            self._build_inputs()
        self._feed(chunk_tokens)
        return self.done

    def run(self, chunk_tokens: int | None = None) -> None:
        """Every remaining unit."""
        while not self.run_unit(chunk_tokens):
            pass

    def _build_inputs(self) -> None:
        from transformers import DynamicCache

        parts = self.parts
        input_ids = torch.tensor([list(self.row.input_ids)], dtype=torch.long, device=parts.device)
        embeds = parts.embeddings(input_ids)
        grid = self.row.image_grid_thw
        if self.features:
            visual = input_ids == parts.image_token_id
            image_embeds = torch.cat([f.embeds for f in self.features]).to(embeds.device, embeds.dtype)
            embeds = embeds.masked_scatter(visual[..., None].expand_as(embeds), image_embeds)
            layers = len(self.features[0].deepstack)
            self._deepstack = [torch.cat([f.deepstack[k] for f in self.features]) for k in range(layers)]
            self._visual = visual if self._deepstack else None
        self._embeds = embeds
        self._positions = parts.positions(input_ids, grid if self.image_count else None)
        self.cache = DynamicCache(config=parts.config)
        if self.prefix is not None:
            for index, (keys, values) in enumerate(self.prefix.layers):
                self.cache.update(keys, values, index)
        self.features = []  # the embeddings (and the deepstack tensors) now hold them

    def _feed(self, chunk_tokens: int | None) -> None:
        assert self._embeds is not None and self._positions is not None
        start = self.done_tokens
        end = self.prompt_tokens if not chunk_tokens else min(self.prompt_tokens, start + chunk_tokens)
        extra: dict[str, Any] = {}
        if self._visual is not None:
            mask = self._visual[:, start:end]
            count = int(mask.sum())
            if count:
                first = int(self._visual[:, :start].sum())
                extra = {
                    "visual_pos_masks": mask,
                    "deepstack_visual_embeds": [layer[first : first + count] for layer in self._deepstack],
                }
        output = self.parts.language(
            self.cache,
            inputs_embeds=self._embeds[:, start:end],
            position_ids=self._positions[..., start:end],
            **extra,
        )
        self.done_tokens = end
        if end == self.prompt_tokens:
            self.hidden = output.last_hidden_state[:, -1]
            self.last_positions = self._positions[..., -1:]
            self._embeds = self._positions = self._visual = None
            self._deepstack = []
