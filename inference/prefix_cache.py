"""Prompt keys/values kept after a prefill, so a follow-up whose prompt starts with an earlier prompt prefills only
the rest.

A follow-up in a thread repeats the first question's whole prompt (system prompt, image tokens, question) before the
first answer and the new question; with the same tokens and the same image grids its positions (Qwen-VL's mRoPE
included) are the same, so that prefix's per-layer keys and values can be reused exactly. An entry is keyed by the
model, the prompt's token ids and its images' image-embedding cache keys (content hash and grid: the image
placeholder tokens are the same for every picture). :meth:`PromptPrefixCache.longest` finds the longest entry that is
a proper prefix of a new prompt (at least one token is left to prefill, for the next token's logits).

Entries stay on the model's device, in the same LRU with a byte budget as the image-embedding cache
(``PEEKBOT_PREFIX_CACHE_BYTES``, sized like ``PEEKBOT_IMAGE_CACHE_BYTES`` when unset); ``Engine.cleanup(force=True)``
and the OOM ladder drop every entry.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from inference.image_cache import ImageEmbeddingCache, nbytes


@dataclass(frozen=True)
class PromptPrefix:
    """One cached prompt: its token count, image count and per-layer ``(keys, values)`` ``(1, heads, tokens, dim)``."""

    tokens: int
    images: int
    layers: tuple[tuple[Any, Any], ...]


class PromptPrefixCache(ImageEmbeddingCache):
    """LRU of prompt keys/values within ``budget_bytes``, looked up by longest proper prefix; thread-safe."""

    def __init__(self, budget_bytes: int, model: str) -> None:
        super().__init__(budget_bytes)
        self.model = model
        self.saved_tokens = 0
        """Prompt tokens taken from the cache instead of being prefilled."""

    def key(self, input_ids: Sequence[int], image_keys: Sequence[Hashable] | None) -> tuple[Hashable, ...]:
        return (self.model, tuple(int(token) for token in input_ids), tuple(image_keys or ()))

    def longest(self, input_ids: Sequence[int], image_keys: Sequence[Hashable] | None) -> PromptPrefix | None:
        """The longest entry whose tokens and images begin ``input_ids`` and its images, leaving a token to prefill."""
        with self._lock:
            best = self._longest(input_ids, image_keys)
            if best is None:
                self.misses += 1
                return None
            self._entries.move_to_end(best[0])
            self.hits += 1
            self.saved_tokens += best[1].tokens
            return best[1]

    def covers_images(self, input_ids: Sequence[int], image_keys: Sequence[Hashable]) -> bool:
        """Whether a kept prefix of this prompt holds every one of its images (counts as no lookup)."""
        with self._lock:
            best = self._longest(input_ids, image_keys)
            return best is not None and best[1].images == len(image_keys)

    def _longest(
        self, input_ids: Sequence[int], image_keys: Sequence[Hashable] | None
    ) -> tuple[Hashable, PromptPrefix] | None:
        tokens = tuple(int(token) for token in input_ids)
        images = tuple(image_keys or ())
        best: tuple[Hashable, PromptPrefix] | None = None
        for key, (value, _) in self._entries.items():
            model, cached, cached_images = key  # type: ignore[misc]
            if model != self.model or len(cached) >= len(tokens) or (best and len(cached) <= best[1].tokens):
                continue
            if tokens[: len(cached)] == cached and images[: len(cached_images)] == cached_images:
                best = (key, value)
        return best

    def keep(self, input_ids: Sequence[int], image_keys: Sequence[Hashable] | None, layers: Sequence[Any]) -> None:
        """Keep a finished prefill's cache ``layers`` (each with ``keys``/``values``). Not copied: a ``DynamicCache``
        layer replaces its tensors (``torch.cat``) instead of writing into them, and the batch copies a joining row."""
        kept = tuple((layer.keys, layer.values) for layer in layers)
        prefix = PromptPrefix(len(input_ids), len(image_keys or ()), kept)
        self.put(self.key(input_ids, image_keys), prefix, nbytes(kept))

    def figures(self) -> dict[str, float]:
        """The image cache's figures plus ``saved_tokens``."""
        return {**super().figures(), "saved_tokens": float(self.saved_tokens)}
