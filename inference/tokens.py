"""Choosing each row's next token: scores from the output layer, then :class:`TokenChooser`.

:meth:`TokenChooser.choose` is the one place a running batch picks tokens: the checkpoint's repetition penalty (over
each row's own prompt and answer), end-of-sequence forbidden until a row has its ``min_new_tokens``, then each row's
pick from its scores (``inference.sampling``: the arg-max, or a draw as the checkpoint's generation config says, from
the row's own seeded random numbers).

The **output projection** on CPU is computed as ``W · hᵀ`` into a reused buffer: a thin ``h · Wᵀ`` with a
151,936-wide output is a slow matrix shape for CPU BLAS libraries (about 2× slower for 8 rows). On GPU the
model's own ``lm_head`` runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from inference.sampling import GREEDY, RowSampling, SamplingSettings, choose_tokens

HISTORY_GROWTH = 256
"""Columns the token history gains each time a row fills it."""


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
    scores: torch.Tensor, generated: int | torch.Tensor, minimums: torch.Tensor, eos_ids: torch.Tensor
) -> None:
    """In place: rows whose minimum length exceeds ``generated`` (one count, or one per row) cannot end yet."""
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


class TokenHistory:
    """Each row's prompt and answer ids, ``(rows, capacity)`` left-aligned; a row's free columns repeat its first id."""

    def __init__(self, device: torch.device, growth: int = HISTORY_GROWTH) -> None:
        self.device = device
        self.growth = max(1, growth)
        self.ids = torch.zeros((0, self.growth), dtype=torch.long, device=device)
        self.lengths: list[int] = []

    def add(self, ids: Sequence[int]) -> None:
        """A new row (last) with its prompt ids."""
        width = max(self.ids.shape[1], len(ids) + self.growth)
        row = torch.full((1, width), int(ids[0]), dtype=torch.long)
        row[0, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        self._widen(width)
        self.ids = torch.cat([self.ids, row.to(self.device)])
        self.lengths.append(len(ids))

    def append(self, tokens: torch.Tensor) -> None:
        """One new id per row."""
        if max(self.lengths) >= self.ids.shape[1]:
            self._widen(self.ids.shape[1] + self.growth)
        columns = torch.tensor(self.lengths, dtype=torch.long, device=self.device)
        self.ids[torch.arange(len(self.lengths), device=self.device), columns] = tokens
        self.lengths = [length + 1 for length in self.lengths]

    def select(self, indices: torch.Tensor, kept: Sequence[int]) -> None:
        """Keep the rows ``indices`` (``kept``: the same indices as a list)."""
        self.ids = self.ids.index_select(0, indices)
        self.lengths = [self.lengths[index] for index in kept]

    def view(self) -> torch.Tensor:
        """Every row's ids up to the longest row's length (shorter rows padded with their own first id)."""
        return self.ids[:, : max(self.lengths)]

    def _widen(self, width: int) -> None:
        extra = width - self.ids.shape[1]
        if extra <= 0:
            return
        filler = self.ids[:, :1].expand(-1, extra)
        self.ids = torch.cat([self.ids, filler], dim=1)


class TokenChooser:
    """Picks every row's next token from its scores (see the module docstring); greedy unless ``sampling`` says."""

    def __init__(
        self,
        *,
        eos_ids: Sequence[int],
        repetition_penalty: float,
        device: torch.device,
        sampling: SamplingSettings = GREEDY,
    ) -> None:
        self.sampling = sampling
        self.eos_ids = sorted(set(eos_ids))
        self.repetition_penalty = float(repetition_penalty or 1.0)
        self._eos = torch.tensor(self.eos_ids, dtype=torch.long, device=device)
        self.device = device

    @property
    def needs_history(self) -> bool:
        return self.repetition_penalty != 1.0

    def start_row(self, seed: int) -> RowSampling:
        """A row's token-choice state at its first new token (a retried row starts again here: the same draws)."""
        return RowSampling.start(self.sampling, seed)

    def choose(
        self,
        scores: torch.Tensor,
        *,
        generated: Sequence[int],
        minimums: Sequence[int],
        history: TokenHistory | None,
        sampling: Sequence[RowSampling] = (),
    ) -> torch.Tensor:
        """The next token of every row: ``scores`` ``(rows, vocab)``; ``generated``, ``minimums`` and ``sampling``
        (from :meth:`start_row`; none: greedy) per row."""
        if history is not None and self.needs_history:
            scores = scores.float()
            penalise_repetition(scores, history.view(), self.repetition_penalty)
        if any(minimum > count for minimum, count in zip(minimums, generated, strict=True)):
            forbid_end_of_sequence(
                scores,
                torch.tensor(list(generated), dtype=torch.long, device=self.device),
                torch.tensor(list(minimums), dtype=torch.long, device=self.device),
                self._eos,
            )
        return choose_tokens(scores, sampling) if sampling else scores.argmax(dim=-1)
