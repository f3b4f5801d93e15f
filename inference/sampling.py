"""Choose each row's next token: greedy, or sampled the way the checkpoint's ``generation_config.json`` says.

Qwen's instruct checkpoints ship sampling settings (Qwen3-VL-4B-Instruct: ``do_sample``, ``temperature`` 0.7,
``top_k`` 20, ``top_p`` 0.8); greedy decoding of such a model loops on long answers. ``PEEKBOT_SAMPLING=auto``
honours them, ``greedy`` takes the arg-max (deterministic; what the batching equivalence tests use).

The running batch's token choice (``inference.tokens.TokenChooser``) applies the repetition penalty and the
minimum-length end-of-sequence block to the scores, then calls :func:`choose_tokens`. Sampling follows transformers'
warpers in their order (temperature, then top-k, then top-p, at least one token kept) and draws with one uniform
number per row and step from that row's own seeded ``torch.Generator``: a row's tokens depend only on its own scores
and seed, never on the other rows of the batch, so a row retried after an out-of-memory error draws the same numbers
and writes the text it already sent again (the engine sends only what is new). "The same" up to rounding, as for
greedy decoding: another batch may round a score differently, which changes a token only at a near-tie.

Why not transformers' own per-request processors: they live inside its continuous-batching module, take that
module's request objects, and draw from the global random state; the tensor work here is a few lines and is
checked against transformers' public warpers in ``tests/inference/test_sampling.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from bot.engine import GenerationRequest

SamplingMode = Literal["auto", "greedy"]

DEFAULT_TOP_K = 50
"""transformers' ``top_k`` when a sampling checkpoint does not set one."""

NOT_HONOURED = {
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0,
    "num_beams": 1,
}
"""Generation-config fields this engine does not apply, with the value that means "off"."""


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """How a row picks its tokens. ``greedy`` ignores the other fields; ``top_k`` 0 and ``top_p`` 1 are "off"."""

    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    reason: str = ""
    """Why these settings (shown by ``peekbot doctor``); not part of :meth:`describe`."""
    ignored: tuple[str, ...] = ()
    """Fields of the checkpoint's generation config that are set but not applied here."""

    def describe(self) -> str:
        """What shapes the text: ``greedy`` or ``sampled: temperature 0.7, top_k 20, top_p 0.8`` (cache key, doctor)."""
        if self.greedy:
            return "greedy"
        return f"sampled: temperature {self.temperature:g}, top_k {self.top_k}, top_p {self.top_p:g}"


GREEDY = SamplingSettings(greedy=True, reason="greedy")


def settings_from_generation_config(config: Mapping[str, Any], mode: SamplingMode = "auto") -> SamplingSettings:
    """The sampling settings for a checkpoint's generation config (``generation_config.json`` as a dict).

    ``greedy`` mode, ``do_sample`` false, a temperature or ``top_p`` of 0 and ``top_k`` 1 give greedy settings: the
    last three are greedy decoding under another name (Qwen2.5-VL ships ``top_k`` 1).
    """
    if mode == "greedy":
        return SamplingSettings(reason="PEEKBOT_SAMPLING=greedy")
    if not config.get("do_sample"):
        return SamplingSettings(reason="the checkpoint's generation config does not sample")
    temperature = _number(config.get("temperature"), 1.0)
    top_k = int(_number(config.get("top_k"), DEFAULT_TOP_K))
    top_p = _number(config.get("top_p"), 1.0)
    ignored = tuple(
        name for name, off in NOT_HONOURED.items() if config.get(name) is not None and config.get(name) != off
    )
    if temperature <= 0 or top_k == 1 or top_p <= 0:
        what = "temperature 0" if temperature <= 0 else "top_k 1" if top_k == 1 else "top_p 0"
        return SamplingSettings(reason=f"the checkpoint's generation config samples with {what}", ignored=ignored)
    return SamplingSettings(
        greedy=False,
        temperature=temperature,
        top_k=max(0, top_k),
        top_p=min(1.0, top_p),
        reason="the checkpoint's generation config",
        ignored=ignored,
    )


def _number(value: Any, default: float) -> float:
    return default if value is None else float(value)


def seed_for(key: str) -> int:
    """A stable 63-bit seed for ``key`` (the request's journal job or request id): the same on every retry."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1


def request_seed(request: GenerationRequest) -> int:
    """A request's seed: from its journal job (an answer regenerated after a restart or a retry writes the same
    text), else from its request id."""
    return seed_for(request.job_id or request.request_id)


class RowRandom:
    """One row's random numbers: a CPU ``torch.Generator`` seeded once, one uniform draw per decoding step.

    CPU generators give the same numbers on every machine and device; a draw is a few microseconds.
    """

    __slots__ = ("generator",)

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def draw(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))


@dataclass(slots=True)
class RowSampling:
    """A decoding row's settings and, when it samples, its random numbers (fresh for every generation attempt)."""

    settings: SamplingSettings
    random: RowRandom | None = None

    @classmethod
    def start(cls, settings: SamplingSettings, seed: int) -> RowSampling:
        """The state of a row at its first new token; a retried row starts again from here."""
        return cls(settings, None if settings.greedy else RowRandom(seed))


def choose_tokens(scores: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """The next token of every row: ``scores`` is ``(rows, vocab)`` after penalties, in the order of ``rows``.

    Greedy rows take the arg-max; sampling rows draw from their filtered distribution with their own numbers.
    """
    sampled = [index for index, row in enumerate(rows) if row.random is not None and not row.settings.greedy]
    if not sampled:
        return scores.argmax(dim=-1)
    settings = [rows[i].settings for i in sampled]
    uniforms = torch.tensor([rows[i].random.draw() for i in sampled], dtype=torch.float32)  # type: ignore[union-attr]
    if len(sampled) == len(rows):
        return sample_from(scores, settings, uniforms.to(scores.device))
    tokens = scores.argmax(dim=-1)
    index = torch.tensor(sampled, dtype=torch.long, device=scores.device)
    tokens[index] = sample_from(scores.index_select(0, index), settings, uniforms.to(scores.device))
    return tokens


def candidates(logits: torch.Tensor, settings: Sequence[SamplingSettings]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's candidate tokens, best first, and their probabilities after temperature, top-k and top-p.

    Returns ``(probabilities, token_ids)``, both ``(rows, k)`` where ``k`` is the largest ``top_k`` (the vocabulary
    when a row has none: a full sort of the vocabulary, some 20 ms a row on a CPU, where a top-k of 20 costs well under
    one); filtered candidates have probability 0. Rows need not share settings.
    """
    device = logits.device
    vocab = logits.shape[-1]
    temperature = torch.tensor([s.temperature for s in settings], dtype=torch.float32, device=device)
    top_k = torch.tensor([s.top_k if 0 < s.top_k < vocab else vocab for s in settings], device=device)
    top_p = torch.tensor([s.top_p for s in settings], dtype=torch.float32, device=device)
    width = int(top_k.max())
    # A positive temperature keeps the order: pick the candidates first, then scale only them.
    values, token_ids = torch.topk(logits, width, dim=-1)  # sorted, best first
    values = values.float() / temperature[:, None]
    ranks = torch.arange(width, device=device)
    values = values.masked_fill(ranks[None, :] >= top_k[:, None], float("-inf"))
    probabilities = values.softmax(dim=-1)
    better = probabilities.cumsum(dim=-1) - probabilities  # the mass of the strictly better candidates
    outside = (better >= top_p[:, None]) & (top_p[:, None] < 1.0)
    outside[:, 0] = False  # the best candidate always stays
    probabilities = probabilities.masked_fill(outside, 0.0)
    return probabilities / probabilities.sum(dim=-1, keepdim=True), token_ids


def sample_from(logits: torch.Tensor, settings: Sequence[SamplingSettings], uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one token per row by inverse transform: ``uniforms`` (one number in [0, 1) per row) picks the candidate
    whose cumulative probability first exceeds it (candidates with probability 0 are never picked)."""
    probabilities, token_ids = candidates(logits, settings)
    cumulative = probabilities.cumsum(dim=-1)
    target = (uniforms.to(cumulative.dtype) * cumulative[:, -1])[:, None]
    choice = torch.searchsorted(cumulative, target, right=True)
    # The kept candidates are a prefix (filters cut the tail): a target rounded up to the total stays on the last one.
    last = (probabilities > 0).sum(dim=-1, keepdim=True) - 1
    return token_ids.gather(1, torch.minimum(choice, last)).squeeze(1)
