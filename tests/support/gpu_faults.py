"""GPU out-of-memory errors on a CPU: forward pre-hooks on a real model that raise ``torch.OutOfMemoryError`` where a
GPU would run out (the only simulated part of the engine's OOM tests).

``OutOfMemoryFaults(model, step_fails=..., image_fails=...)`` decides per call: ``step_fails(rows, count)`` for each
decoding forward of the language model (``rows`` in the batch, ``count`` such forwards with that many rows so far,
this one included), ``image_fails(tokens)`` for each image through the vision encoder (its merged tokens). It records
what was attempted: ``steps`` (rows per decoding forward) and ``images`` (tokens per image).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any


class OutOfMemoryFaults:
    def __init__(
        self,
        model: Any,
        *,
        step_fails: Callable[[int, int], bool] = lambda rows, count: False,
        image_fails: Callable[[int], bool] = lambda tokens: False,
    ) -> None:
        backbone = model.base_model
        self._visual = backbone.visual
        self._language = backbone.language_model
        self._merge = backbone.visual.spatial_merge_size**2
        self.step_fails = step_fails
        self.image_fails = image_fails
        self.steps: list[int] = []
        self.images: list[int] = []
        self._counts: Counter[int] = Counter()
        self._handles: list[Any] = []

    def __enter__(self) -> OutOfMemoryFaults:
        self._handles = [
            self._visual.register_forward_pre_hook(self._on_image, with_kwargs=True),
            self._language.register_forward_pre_hook(self._on_language, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def _on_image(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        tokens = int(grid.prod()) // self._merge
        self.images.append(tokens)
        if self.image_fails(tokens):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def _on_language(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        input_ids = kwargs.get("input_ids")
        if input_ids is None:  # a prefill chunk
            return
        rows = int(input_ids.shape[0])
        self.steps.append(rows)
        self._counts[rows] += 1
        if self.step_fails(rows, self._counts[rows]):
            raise torch.OutOfMemoryError("CUDA out of memory while growing the KV cache")
