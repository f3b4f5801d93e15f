"""Greedy decoding of a batch of prompts: each prompt is prefilled alone, then all rows decode together.

Why not ``model.generate``: on small models its per-step bookkeeping (logits processors, stopping
criteria, cache and mask updates) costs as much as the model itself, and a left-padded batched prefill
spends most of its time on padding (attention over the longest prompt for every row). Here:

* **prefill per row**, unpadded (vision encoder and text), positions from the model's own
  ``_prepare_position_ids_for_generation`` (Qwen-VL's 3-D mRoPE positions, the same ones ``generate`` uses);
  each row's keys and values are copied, left padded, into one batch cache sized for the whole answer;
* **decode all rows together**: one forward per step on the newest token of every row, positions advance by
  one per step, the cache grows in place (no copy of the cache per step); a row that finishes leaves the
  batch, so the rows still running get cheaper;
* the **output projection** on CPU is computed as ``W · hᵀ`` into a reused buffer: a thin ``h · Wᵀ`` with a
  151,936-wide output is a slow matrix shape for CPU BLAS libraries (about 2× slower for 8 rows). On GPU the
  model's own ``lm_head`` runs unchanged.

The next token of a row is the arg-max of its scores after the checkpoint's repetition penalty (over that
row's own prompt and answer) and, until the row has its ``min_new_tokens``, with end-of-sequence forbidden.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicLayer

logger = logging.getLogger(__name__)

CACHE_GROWTH = 256
"""Positions the batch cache (and its mask) gains each time it is full."""

StepCallback = Callable[[list[int], int], Sequence[bool]]
"""``(token of every row, step) -> finished flag of every row``; step 1 is the first new token."""


@dataclass
class DecodeRow:
    """One prompt: unpadded token ids, its images (patches and grids) and the answer's minimum length."""

    input_ids: Sequence[int]
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    min_new_tokens: int = 0


class GrowingLayer(DynamicLayer):
    """A batch cache layer whose buffers grow in chunks: ``update`` writes in place and returns views.

    ``DynamicLayer`` concatenates the whole cache with the new token at every step (a full copy per step);
    this one copies only when a chunk of ``growth`` positions is used up. It starts as ``length`` zeroed
    positions per row that ``write_row`` fills with each row's prefilled (left-padded) states.
    """

    def __init__(self, rows: int, length: int, like_keys: torch.Tensor, like_values: torch.Tensor,
                 growth: int) -> None:
        super().__init__()
        self.growth = max(1, growth)
        self.dtype, self.device = like_keys.dtype, like_keys.device
        self.length = length
        heads = like_keys.shape[1]
        capacity = length + self.growth
        self._key_buffer = like_keys.new_zeros((rows, heads, capacity, like_keys.shape[-1]))
        self._value_buffer = like_values.new_zeros((rows, like_values.shape[1], capacity, like_values.shape[-1]))
        self._expose()
        self.is_initialized = True

    def write_row(self, row: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Place one prompt's states (1, heads, n, dim) at the end of ``row`` (left padding before them)."""
        count = keys.shape[-2]
        self._key_buffer[row, :, self.length - count : self.length] = keys[0]
        self._value_buffer[row, :, self.length - count : self.length] = values[0]

    def _expose(self) -> None:
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]

    def _grow(self, needed: int) -> None:
        capacity = needed + self.growth
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            new = old.new_empty((old.shape[0], old.shape[1], capacity, old.shape[-1]))
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        end = self.length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            self._grow(end)
        self._key_buffer[:, :, self.length : end] = key_states
        self._value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buffer = self._key_buffer.index_select(0, indices)
        self._value_buffer = self._value_buffer.index_select(0, indices)
        self._expose()


class OutputProjection:
    """Hidden states ``(rows, hidden)`` → scores ``(rows, vocab)`` with the model's output layer weights.

    On CPU a plain ``nn.Linear`` is computed as ``W · hᵀ`` into a reused ``(vocab, rows)`` buffer and
    returned as its transposed view (no copy of the weights, no new vocabulary-sized allocation per step).
    Anything else (GPU, quantised or hooked layers) runs the layer itself.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        weight = getattr(layer, "weight", None)
        self.fast = (
            type(layer) is nn.Linear
            and isinstance(weight, torch.Tensor)
            and weight.device.type == "cpu"
            and not getattr(layer, "_hf_hook", None)
        )
        self._buffer: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return self.layer(hidden)
        weight: torch.Tensor = self.layer.weight
        rows = hidden.shape[0]
        buffer = self._buffer
        if buffer is None or buffer.shape[1] != rows or buffer.dtype != weight.dtype:
            buffer = self._buffer = weight.new_empty((weight.shape[0], rows))
        torch.mm(weight, hidden.to(weight.dtype).T, out=buffer)
        if self.layer.bias is not None:
            buffer += self.layer.bias[:, None]
        return buffer.T


def forbid_end_of_sequence(
    scores: torch.Tensor, generated: int, minimums: torch.Tensor, eos_ids: torch.Tensor
) -> None:
    """In place: rows whose minimum length exceeds ``generated`` cannot pick an end-of-sequence token."""
    blocked = minimums > generated
    if eos_ids.numel() == 0 or not bool(blocked.any()):
        return
    rows = blocked.nonzero().flatten()
    scores[rows[:, None], eos_ids[None, :]] = float("-inf")


def penalise_repetition(scores: torch.Tensor, history: torch.Tensor, penalty: float) -> None:
    """In place, as transformers' repetition penalty: seen tokens' scores are divided (positive) or multiplied.

    ``history`` is ``(rows, length)`` token ids; a row shorter than ``length`` repeats one of its own tokens
    as filler, which changes nothing (the same score is written twice).
    """
    seen = scores.gather(1, history)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    scores.scatter_(1, history, seen)


def _position_ids_for(model: nn.Module, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """The prefill position ids ``generate`` would use: Qwen-VL's [text; t; h; w] rows, or plain positions."""
    prepare = getattr(model, "_prepare_position_ids_for_generation", None)
    if prepare is not None:
        return prepare(input_ids, {"input_ids": input_ids, **kwargs})
    return torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]


class GreedyDecoder:
    """Greedy decoding for batches of ``DecodeRow`` on a transformers image-text model (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        eos_ids: Sequence[int],
        repetition_penalty: float = 1.0,
    ) -> None:
        self.model = model
        self.backbone = model.base_model
        self.device = device
        self.projection = OutputProjection(model.get_output_embeddings())
        self.eos_ids = sorted(set(eos_ids))
        self.repetition_penalty = float(repetition_penalty or 1.0)
        config = model.config
        self.image_token_id = getattr(config, "image_token_id", None)
        self.video_token_id = getattr(config, "video_token_id", None)

    # ------------------------------------------------------------------ prefill

    def _token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        types = torch.zeros_like(input_ids, dtype=torch.int)
        if self.image_token_id is not None:
            types[input_ids == self.image_token_id] = 1
        if self.video_token_id is not None:
            types[input_ids == self.video_token_id] = 2
        return types

    def prefill(self, row: DecodeRow) -> tuple[torch.Tensor, Cache, torch.Tensor]:
        """Run one unpadded prompt: its last hidden state, its cache and its last position ids."""
        from transformers import DynamicCache

        input_ids = torch.tensor([list(row.input_ids)], dtype=torch.long, device=self.device)
        grid = row.image_grid_thw.to(self.device) if row.image_grid_thw is not None else None
        position_kwargs: dict[str, Any] = {"attention_mask": torch.ones_like(input_ids)}
        if grid is not None:
            position_kwargs.update(image_grid_thw=grid, mm_token_type_ids=self._token_types(input_ids))
        positions = _position_ids_for(self.model, input_ids, position_kwargs)
        cache = DynamicCache(config=self.model.config)
        inputs: dict[str, Any] = {}
        if row.pixel_values is not None and grid is not None:
            inputs.update(pixel_values=row.pixel_values.to(self.device, self.model.dtype), image_grid_thw=grid)
        output = self.backbone(
            input_ids=input_ids, position_ids=positions, past_key_values=cache, use_cache=True, **inputs
        )
        return output.last_hidden_state[:, -1], cache, positions[..., -1:]

    # ------------------------------------------------------------------ decode

    def decode(self, rows: Sequence[DecodeRow], max_new_tokens: int, on_step: StepCallback) -> None:
        """Generate up to ``max_new_tokens`` per row; ``on_step`` sees every step's tokens and ends rows.

        Rows that ``on_step`` reports finished leave the batch; the call returns when every row is finished
        or ``max_new_tokens`` steps were taken. Finished rows get ``-1`` as their token in later steps.
        """
        count = len(rows)
        if count == 0 or max_new_tokens < 1:
            return
        longest = max(len(row.input_ids) for row in rows)
        growth = min(max_new_tokens, CACHE_GROWTH)
        hidden_rows: list[torch.Tensor] = []
        positions_rows: list[torch.Tensor] = []
        layers: list[GrowingLayer] = []
        for index, row in enumerate(rows):
            hidden, cache, positions = self.prefill(row)
            hidden_rows.append(hidden)
            positions_rows.append(positions)
            for layer_index, layer in enumerate(cache.layers):
                if index == 0:
                    layers.append(GrowingLayer(count, longest, layer.keys, layer.values, growth))
                layers[layer_index].write_row(index, layer.keys, layer.values)
            del cache
        mask = torch.zeros((count, longest + growth), dtype=torch.long, device=self.device)
        for index, row in enumerate(rows):
            mask[index, longest - len(row.input_ids) : longest] = 1
        batch_dim = 1 if positions_rows[0].ndim == 3 else 0
        self._decode_loop(
            rows,
            torch.cat(hidden_rows),
            Cache(layers=list(layers)),
            mask,
            torch.cat(positions_rows, dim=batch_dim),
            batch_dim,
            longest,
            max_new_tokens,
            on_step,
        )

    def _decode_loop(
        self,
        rows: Sequence[DecodeRow],
        hidden: torch.Tensor,
        cache: Cache,
        mask: torch.Tensor,
        positions: torch.Tensor,
        batch_dim: int,
        length: int,
        max_new_tokens: int,
        on_step: StepCallback,
    ) -> None:
        count = len(rows)
        active = list(range(count))
        eos_ids = torch.tensor(self.eos_ids, dtype=torch.long, device=self.device)
        minimums = torch.tensor([row.min_new_tokens for row in rows], dtype=torch.long, device=self.device)
        longest_minimum = max(row.min_new_tokens for row in rows)
        history = self._history(rows, max_new_tokens) if self.repetition_penalty != 1.0 else None
        for step in range(1, max_new_tokens + 1):
            scores = self.projection(hidden)
            if history is not None:
                scores = scores.float()
                penalise_repetition(scores, history[:, : length + step - 1], self.repetition_penalty)
            if step <= longest_minimum:
                forbid_end_of_sequence(scores, step - 1, minimums, eos_ids)
            tokens = scores.argmax(dim=-1)
            chosen = tokens.tolist()
            every_row = [-1] * count
            for slot, row_index in enumerate(active):
                every_row[row_index] = chosen[slot]
            finished = on_step(every_row, step)
            if step == max_new_tokens:
                return
            keep = [slot for slot, row_index in enumerate(active) if not finished[row_index]]
            if not keep:
                return
            if len(keep) < len(active):
                selected = torch.tensor(keep, dtype=torch.long, device=self.device)
                cache.batch_select_indices(selected)
                mask = mask.index_select(0, selected)
                positions = positions.index_select(batch_dim, selected)
                tokens = tokens.index_select(0, selected)
                minimums = minimums.index_select(0, selected)
                if history is not None:
                    history = history.index_select(0, selected)
                active = [active[slot] for slot in keep]
            if history is not None:
                history[:, length + step - 1] = tokens
            positions = positions + 1
            if mask.shape[1] < length + step:
                mask = torch.cat([mask, mask.new_zeros((mask.shape[0], CACHE_GROWTH))], dim=1)
            mask[:, length + step - 1] = 1
            output = self.backbone(
                input_ids=tokens[:, None],
                attention_mask=mask[:, : length + step],
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            hidden = output.last_hidden_state[:, -1]

    def _history(self, rows: Sequence[DecodeRow], max_new_tokens: int) -> torch.Tensor:
        """Each row's prompt ids (left-filled with its first id) with room for the answer (repetition penalty)."""
        longest = max(len(row.input_ids) for row in rows)
        history = torch.empty((len(rows), longest + max_new_tokens), dtype=torch.long)
        for index, row in enumerate(rows):
            ids = list(row.input_ids)
            history[index] = ids[0]
            history[index, longest - len(ids) : longest] = torch.tensor(ids, dtype=torch.long)
        return history.to(self.device)
