"""Warm-up window bookkeeping for the Trainer's metered training steps.

docs/concepts/protocol.md#rule-3: the first ``warmup_steps`` optimizer steps of a run are metered in
their own ``warmup`` window (counted in training cost, but kept apart so that one-off costs such
as allocator growth or kernel autotuning are visible), every later step in ``train`` windows. The
CUDA peak is taken after the warm-up: the counter is reset when the warm-up window closes. The
saved-tensor meter is active in both windows, never during validation.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import torch

from localearn.measure import PhaseMeter


def reset_cuda_peak(device: torch.device) -> None:
    """Start a fresh CUDA peak (synchronised, caches emptied); a no-op off CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def metered_steps(
    batches: Iterable[Any], meter: PhaseMeter, saved: contextlib.AbstractContextManager[Any],
    steps_done: Callable[[], int], warmup_steps: int, device: torch.device,
) -> Iterator[Iterator[Any]]:
    """Yield an iterator over ``batches`` whose consumption is metered in warm-up/train windows.

    The caller runs one optimizer step per batch it takes and advances ``steps_done()`` before
    asking for the next batch; the window switches from ``warmup`` to ``train`` exactly when
    ``steps_done()`` reaches ``warmup_steps``. Leaving the ``with`` block (normally or by an
    exception, e.g. a diverged step) closes the open window. ``saved`` (the saved-tensor meter, or
    a null context when memory is not measured) is entered around every window.
    """
    def gen() -> Generator[Any, None, None]:
        it = iter(batches)
        while True:
            warm = steps_done() < warmup_steps
            with meter.phase("warmup" if warm else "train"), saved:
                for batch in it:
                    yield batch
                    if warm and steps_done() >= warmup_steps:
                        break
                else:
                    return
            if warm:
                reset_cuda_peak(device)  # the peak is taken after warm-up (Rule 3)

    with contextlib.closing(gen()) as steps:
        yield steps
