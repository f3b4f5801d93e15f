"""Greedy decoding of a fixed set of prompts together (warm-up, tests, and the reference a batch is checked against).

Why not ``model.generate``: on small models its per-step bookkeeping (logits processors, stopping criteria, cache
and mask updates) costs as much as the model itself, and a left-padded batched prefill spends most of its time on
padding (attention over the longest prompt for every row). Here every prompt is prefilled alone, unpadded
(``inference.prefill``), and all rows then decode together over one batch cache (``inference.batch``); a row that
finishes leaves the batch, so the rows still running get cheaper. The engine drives the same pieces itself, letting
rows join between steps (``inference.execution``).

The next token of a row is chosen by ``inference.tokens.TokenChooser``: the arg-max of its scores after the
checkpoint's repetition penalty and, until the row has its ``min_new_tokens``, with end-of-sequence forbidden.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from inference.batch import RunningBatch
from inference.prefill import DecodeRow, ModelParts, RowPrefill
from inference.tokens import OutputProjection, TokenChooser, forbid_end_of_sequence, penalise_repetition

__all__ = [
    "CACHE_GROWTH",
    "DecodeRow",
    "GreedyDecoder",
    "OutputProjection",
    "StepCallback",
    "forbid_end_of_sequence",
    "penalise_repetition",
]

logger = logging.getLogger(__name__)

CACHE_GROWTH = 256
"""Positions the batch cache (and its mask) gains each time it is full."""

StepCallback = Callable[[list[int], int], Sequence[bool]]
"""``(token of every row, step) -> finished flag of every row``; step 1 is the first new token."""


class GreedyDecoder:
    """Greedy decoding for a fixed set of ``DecodeRow`` on a transformers image-text model (see the module doc)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        eos_ids: Sequence[int],
        repetition_penalty: float = 1.0,
    ) -> None:
        self.model = model
        self.device = device
        self.parts = ModelParts(model, device)
        self.chooser = TokenChooser(eos_ids=eos_ids, repetition_penalty=repetition_penalty, device=device)

    def prefill(self, row: DecodeRow, chunk_tokens: int | None = None) -> RowPrefill:
        """One prompt prefilled alone (in chunks of ``chunk_tokens`` when given)."""
        prefill = RowPrefill(self.parts, row)
        prefill.run(chunk_tokens)
        return prefill

    def new_batch(self, growth: int = CACHE_GROWTH) -> RunningBatch:
        return RunningBatch(self.parts, self.chooser, growth=growth)

    def decode(self, rows: Sequence[DecodeRow], max_new_tokens: int, on_step: StepCallback) -> None:
        """Generate up to ``max_new_tokens`` per row; ``on_step`` sees every step's tokens and ends rows.

        Rows that ``on_step`` reports finished leave the batch; the call returns when every row is finished
        or ``max_new_tokens`` steps were taken. Finished rows get ``-1`` as their token in later steps.
        """
        if not rows or max_new_tokens < 1:
            return
        batch = self.new_batch(min(max_new_tokens, CACHE_GROWTH))
        for index, row in enumerate(rows):
            batch.join(self.prefill(row), index, min_new_tokens=row.min_new_tokens)
        for step in range(1, max_new_tokens + 1):
            tokens = batch.choose()
            every_row = [-1] * len(rows)
            for owner, token in zip(batch.owners, tokens, strict=True):
                every_row[owner] = token
            finished = on_step(every_row, step)
            if step == max_new_tokens:
                return
            batch.advance([bool(finished[owner]) for owner in batch.owners])
            if not batch:
                return
            batch.feed()
