"""The running batch: rows join after their prefill, decode together one token per step, and leave when finished.

* **One batch cache** per decoder layer (:class:`BatchLayer`): ``(rows, heads, capacity, dim)`` buffers in which
  every row's keys and values end at the same column (left padding before them, masked out). A step writes the new
  column in place, so the cache is copied only when it grows (every ``growth`` positions) or a row joins.
* **Join** (:meth:`RunningBatch.join`): a prefilled row's keys and values are copied in, left padded to the batch's
  length; a row longer than the batch grows the cache on the left (the other rows get more padding). Leading columns
  that no row uses any more are trimmed away (:meth:`RunningBatch.trim`) when rows leave.
* **Step**: :meth:`RunningBatch.choose` turns the last hidden state of every row into its next token
  (:class:`inference.tokens.TokenChooser`), :meth:`RunningBatch.advance` records them and lets finished rows leave,
  :meth:`RunningBatch.feed` runs the language model once on the new token of every row. Positions advance by one per
  step and row. ``feed`` is all-or-nothing: after an out-of-memory error the batch is as before, the chosen tokens
  still pending, so the caller can evict rows and feed the rest again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from inference.prefill import ModelParts, RowPrefill
from inference.sampling import RowSampling
from inference.tokens import OutputProjection, TokenChooser, TokenHistory


class BatchLayer(DynamicLayer):
    """One decoder layer's keys and values for the running batch; columns ``[start, end)`` are visible."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, growth: int) -> None:
        super().__init__()
        self.growth = max(1, growth)
        self.dtype, self.device = keys.dtype, keys.device
        length = keys.shape[-2]
        self._keys = keys.new_zeros((*keys.shape[:2], length + self.growth, keys.shape[-1]))
        self._values = values.new_zeros((*values.shape[:2], length + self.growth, values.shape[-1]))
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self.start, self.end = 0, length
        self._expose()
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self._keys[:, :, self.start : self.end]
        self.values = self._values[:, :, self.start : self.end]

    def add_row(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """A new last row with ``keys``/``values`` ``(1, heads, n, dim)``; the visible part becomes ``length`` columns
        (at least the current and the new row's), rebased to start at column 0 with ``growth`` free columns after."""
        width = self.end - self.start
        capacity = length + max(self.growth, self._keys.shape[-2] - self.end)
        for name, new in (("_keys", keys), ("_values", values)):
            old = getattr(self, name)
            buffer = old.new_zeros((old.shape[0] + 1, old.shape[1], capacity, old.shape[-1]))
            buffer[:-1, :, length - width : length] = old[:, :, self.start : self.end]
            buffer[-1, :, length - new.shape[-2] : length] = new[0]
            setattr(self, name, buffer)
        self.start, self.end = 0, length
        self._expose()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        end = self.end + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            self._grow(end + self.growth)
        self._keys[:, :, self.end : end] = key_states
        self._values[:, :, self.end : end] = value_states
        self.end = end
        self._expose()
        return self.keys, self.values

    def _grow(self, capacity: int) -> None:
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((old.shape[0], old.shape[1], capacity, old.shape[-1]))
            new[:, :, : self.end] = old[:, :, : self.end]
            setattr(self, name, new)

    def get_seq_length(self) -> int:
        return self.end - self.start

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys = self._keys.index_select(0, indices)
        self._values = self._values.index_select(0, indices)
        self._expose()

    def set_span(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self._expose()


class BatchRow:
    """What the batch keeps per row: its owner (the caller's handle), minimum length, tokens generated so far and its
    token-choice state (its own random numbers when it samples)."""

    __slots__ = ("first_column", "generated", "min_new_tokens", "owner", "prompt_tokens", "sampling")

    def __init__(
        self, owner: Any, prompt_tokens: int, min_new_tokens: int, first_column: int, sampling: RowSampling
    ) -> None:
        self.sampling = sampling
        self.owner = owner
        self.prompt_tokens = prompt_tokens
        self.min_new_tokens = min_new_tokens
        self.generated = 0
        self.first_column = first_column


class RunningBatch:
    """Rows decoding together over one batch cache (see the module docstring). Not thread-safe: one worker owns it."""

    def __init__(self, parts: ModelParts, chooser: TokenChooser, *, growth: int) -> None:
        self.parts = parts
        self.chooser = chooser
        self.growth = max(1, growth)
        self.projection = OutputProjection(parts.model.get_output_embeddings())
        self.rows: list[BatchRow] = []
        self.layers: list[BatchLayer] = []
        self.cache: Cache | None = None
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.hidden: torch.Tensor | None = None
        """Last hidden state per row ``(rows, hidden)`` while tokens are to be chosen; None while ``pending``."""
        self.pending: torch.Tensor | None = None
        """Chosen tokens ``(rows,)`` not fed to the model yet."""
        self.history: TokenHistory | None = None
        self._batch_dim = 1
        self._chosen: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def length(self) -> int:
        """The batch cache's visible length (every row's prompt and answer so far, left padded to the longest)."""
        return self.layers[0].get_seq_length() if self.rows else 0

    @property
    def owners(self) -> list[Any]:
        return [row.owner for row in self.rows]

    # ------------------------------------------------------------------ membership

    def join(self, prefill: RowPrefill, owner: Any, *, min_new_tokens: int = 0, seed: int = 0) -> None:
        """Add a finished prefill as the last row; its first token is chosen at the next :meth:`choose`. ``seed``
        seeds the row's random numbers when it samples (the same seed on a retry: the same text).

        Only between steps (no tokens pending). All-or-nothing: an out-of-memory error leaves the batch unchanged.
        """
        assert prefill.done and prefill.hidden is not None and prefill.last_positions is not None
        if self.pending is not None:
            raise RuntimeError("a row can only join while no tokens are pending")
        count = prefill.prompt_tokens
        layers = prefill.cache.layers
        sampling = self.chooser.start_row(seed)
        if not self.rows:
            self._start(prefill, owner, min_new_tokens, sampling)
            return
        length = max(self.length, count)
        shift = length - self.length
        start = self.layers[0].start
        mask = self.mask.new_zeros((len(self.rows) + 1, length + self.growth))
        mask[:-1, shift:length] = self.mask[:, start : self.layers[0].end]
        mask[-1, length - count : length] = 1
        spans = [(layer.start, layer.end) for layer in self.layers]
        buffers = [(layer._keys, layer._values) for layer in self.layers]
        try:
            for layer, source in zip(self.layers, layers, strict=True):
                layer.add_row(source.keys, source.values, length)
            hidden = torch.cat([self.hidden, prefill.hidden.to(self.hidden.dtype)])
            positions = torch.cat([self.positions, prefill.last_positions], dim=self._batch_dim)
            if self.history is not None:
                self.history.add(prefill.row.input_ids)
        except BaseException:
            for layer, (keys, values), (begin, end) in zip(self.layers, buffers, spans, strict=True):
                layer._keys, layer._values = keys, values
                layer.set_span(begin, end)
            raise
        for row in self.rows:
            row.first_column += shift - start
        self.rows.append(BatchRow(owner, count, min_new_tokens, length - count, sampling))
        self.mask, self.hidden, self.positions = mask, hidden, positions

    def _start(self, prefill: RowPrefill, owner: Any, min_new_tokens: int, sampling: RowSampling) -> None:
        count = prefill.prompt_tokens
        self.layers = [BatchLayer(layer.keys, layer.values, self.growth) for layer in prefill.cache.layers]
        self.cache = Cache(layers=list(self.layers))
        self.mask = torch.zeros((1, count + self.growth), dtype=torch.long, device=self.parts.device)
        self.mask[0, :count] = 1
        self.hidden = prefill.hidden
        self.positions = prefill.last_positions
        self._batch_dim = self.positions.ndim - 2
        self.history = None
        if self.chooser.needs_history:
            self.history = TokenHistory(self.parts.device)
            self.history.add(prefill.row.input_ids)
        self.rows = [BatchRow(owner, count, min_new_tokens, 0, sampling)]

    def remove(self, indices: Sequence[int]) -> None:
        """Let the rows at ``indices`` leave (finished, cancelled or evicted), then trim unused leading columns."""
        gone = set(indices)
        kept = [index for index in range(len(self.rows)) if index not in gone]
        if len(kept) == len(self.rows):
            return
        if not kept:
            self.clear()
            return
        selected = torch.tensor(kept, dtype=torch.long, device=self.parts.device)
        assert self.cache is not None and self.mask is not None and self.positions is not None
        self.cache.batch_select_indices(selected)
        self.mask = self.mask.index_select(0, selected)
        self.positions = self.positions.index_select(self._batch_dim, selected)
        if self.hidden is not None:
            self.hidden = self.hidden.index_select(0, selected)
        if self.pending is not None:
            self.pending = self.pending.index_select(0, selected)
        if self.history is not None:
            self.history.select(selected, kept)
        self.rows = [self.rows[index] for index in kept]
        self.trim()

    def trim(self) -> None:
        """Hide leading columns no row uses (their memory is reused when the cache is next reallocated)."""
        if not self.rows:
            return
        first = min(row.first_column for row in self.rows)
        layer = self.layers[0]
        if first > layer.start:
            for each in self.layers:
                each.set_span(first, each.end)

    def clear(self) -> None:
        """Drop every row and the cache."""
        self.rows = []
        self.layers = []
        self.cache = None
        self.mask = self.positions = self.hidden = self.pending = None
        self.history = None

    # ------------------------------------------------------------------ step

    def choose(self) -> list[int]:
        """Every row's next token (the batch must have hidden states, i.e. nothing pending)."""
        assert self.hidden is not None
        scores = self.projection(self.hidden)
        tokens = self.chooser.choose(
            scores,
            generated=[row.generated for row in self.rows],
            minimums=[row.min_new_tokens for row in self.rows],
            history=self.history,
            sampling=[row.sampling for row in self.rows],
        )
        self._chosen = tokens
        return tokens.tolist()

    def advance(self, finished: Sequence[bool]) -> None:
        """Record the tokens :meth:`choose` returned; rows flagged ``finished`` leave. The rest's tokens are pending."""
        tokens = self._chosen
        assert tokens is not None, "advance() follows choose()"
        self._chosen = None
        for row in self.rows:
            row.generated += 1
        if self.history is not None:
            self.history.append(tokens)
        self.hidden = None
        self.pending = tokens
        self.remove([index for index, done in enumerate(finished) if done])

    def feed(self) -> None:
        """One forward of the language model on every row's pending token; all-or-nothing."""
        assert self.pending is not None and self.mask is not None and self.positions is not None
        layer = self.layers[0]
        start, end = layer.start, layer.end
        if self.mask.shape[1] <= end:
            self.mask = torch.cat([self.mask, self.mask.new_zeros((self.mask.shape[0], self.growth))], dim=1)
        positions = self.positions + 1
        self.mask[:, end] = 1
        try:
            output = self.parts.language(
                self.cache,
                input_ids=self.pending[:, None],
                attention_mask=self.mask[:, start : end + 1],
                position_ids=positions,
            )
        except BaseException:
            self.mask[:, end] = 0
            for each in self.layers:
                each.set_span(start, end)
            raise
        self.hidden = output.last_hidden_state[:, -1]
        self.positions = positions
        self.pending = None
