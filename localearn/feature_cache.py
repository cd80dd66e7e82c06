"""A content-keyed memo of frozen layers' outputs: CaFo's predictor stages and the frozen prefix
of greedy schedules (``TrainConfig.prefix_cache_gb``, see :meth:`LocalLearner.train_step`).

Why here and not in the data pipeline: the trainer hands the learner shuffled batches, never
sample indices, and the learner cannot swap the trainer's dataset, so the only cache a learner
can own is one keyed on the *content* of each input row. Each row is fingerprinted with a
128-bit BLAKE2b digest of its bytes; a hit returns the features stored for that content. This is
exact (up to a 2⁻¹²⁸ digest collision) because frozen blocks in eval mode map each sample on its
own, whatever the batch: the cache refuses to serve while a block is in training mode, and drops
everything as soon as any block tensor changes (``data_ptr`` or the in-place ``_version`` counter
moves: an optimizer step, ``load_state_dict``, ``.to()``).

With augmentation (random crop/flip) no row repeats, so nothing can be cached: after the second
epoch of a stage the learner checks the training hit rate of the previous epoch and, below one
half, switches training lookups off and frees the memo (validation rows still repeat and stay
cached). Memory is capped by ``max_bytes``; past it new rows are computed but not stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from localearn.layer import Context
from localearn.stage import Stage

if TYPE_CHECKING:
    from localearn.learner import LocalLearner


def fingerprints(x: Tensor) -> list[bytes]:
    """One 16-byte digest per row of ``x`` (its exact bytes, dtype and shape included)."""
    arr = x.detach().contiguous().cpu().numpy().reshape(x.shape[0], -1)
    tag = f"{arr.dtype}{tuple(x.shape[1:])}".encode()
    out = []
    for row in arr:
        h = hashlib.blake2b(tag, digest_size=16)
        h.update(row.tobytes())
        out.append(h.digest())
    return out


class FeatureCache:
    """Rows of features addressed by input fingerprints, valid for one ``token``.

    Args:
        max_bytes: stop storing new rows past this many bytes of features.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.clear()

    def clear(self, token: Hashable = None) -> None:
        """Forget everything; the memo is now valid for ``token``."""
        self.token = token
        self.index: dict[bytes, int] = {}
        self.store: Tensor | None = None
        self.rows = 0
        self.lookups = 0
        self.hits = 0
        self._seen = (0, 0)  # (lookups, hits) when rows_repeat last looked

    def rows_repeat(self, epoch: int) -> bool:
        """Whether training rows repeated since the last call (``epoch``: the unit's epoch about to
        start): from the 3rd epoch on, a hit rate under one half means they never will (augmented data)."""
        lookups, hits = self.lookups - self._seen[0], self.hits - self._seen[1]
        self._seen = (self.lookups, self.hits)
        return epoch < 3 or not lookups or hits >= 0.5 * lookups

    @property
    def nbytes(self) -> int:
        return (
            0
            if self.store is None
            else self.rows * self.store[0].numel() * self.store.element_size()
        )

    def _append(self, keys: list[bytes], feats: Tensor) -> None:
        if self.store is None:
            self.store = torch.empty(
                (max(1024, len(keys)), *feats.shape[1:]), dtype=feats.dtype, device=feats.device
            )
        row_bytes = feats[0].numel() * feats.element_size()
        room = max(0, (self.max_bytes - self.nbytes) // max(row_bytes, 1))
        n = min(len(keys), int(room))
        if n == 0:
            return
        if self.rows + n > self.store.shape[0]:  # grow geometrically: amortised O(1) per row
            cap = max(self.rows + n, 2 * self.store.shape[0])
            grown = torch.empty(
                (cap, *self.store.shape[1:]), dtype=self.store.dtype, device=self.store.device
            )
            grown[: self.rows] = self.store[: self.rows]
            self.store = grown
        self.store[self.rows : self.rows + n] = feats[:n]
        for i, key in enumerate(keys[:n]):
            self.index[key] = self.rows + i
        self.rows += n

    def lookup(
        self, x: Tensor, token: Hashable, compute: Callable[[Tensor], Tensor], store: bool = True
    ) -> Tensor:
        """Features of every row of ``x``: cached rows are read, the others computed (and kept).

        Args:
            x: the input batch.
            token: identifies what the features depend on; a new token empties the memo.
            compute: maps a sub-batch of ``x`` to its features (no grad, blocks in eval mode).
            store: keep newly computed rows.
        """
        if token != self.token:
            self.clear(token)
        keys = fingerprints(x)
        rows = [self.index.get(k, -1) for k in keys]
        miss = [i for i, r in enumerate(rows) if r < 0]
        self.lookups += len(keys)
        self.hits += len(keys) - len(miss)
        if not miss:
            assert self.store is not None
            return self.store[torch.tensor(rows, device=self.store.device)]
        if len(miss) == len(keys):
            feats = compute(x)
            if store:
                self._append(keys, feats)
            return feats
        miss_t = torch.tensor(miss, device=x.device)
        new = compute(x[miss_t])
        hit = [i for i, r in enumerate(rows) if r >= 0]
        assert self.store is not None
        out = torch.empty((len(keys), *new.shape[1:]), dtype=new.dtype, device=new.device)
        out[miss_t.to(new.device)] = new
        out[torch.tensor(hit, device=new.device)] = self.store[
            torch.tensor([rows[i] for i in hit], device=self.store.device)
        ].to(new.device)
        if store:
            self._append([keys[i] for i in miss], new)
        return out


def serve_prefix(learner: LocalLearner, x: Any, ctx: Context, stage: Stage,
                 positions: Sequence[tuple[int, ...]]) -> tuple[int, Any]:
    """How many leading positions of ``stage``'s step the learner's ``prefix_cache`` served, and the
    input of the first one left (``x`` itself when none was). Only wholly frozen positions (every
    layer in eval mode, whose outputs depend on each row alone) on a batch's own inputs are served;
    the memo's token is every tensor of those layers and its version."""
    cache = learner.prefix_cache
    if cache is None or ctx.inputs is not None or not isinstance(x, Tensor):
        return 0, x
    first = next((p for p, pos in enumerate(positions) if set(pos) & set(stage.layers)), 0)
    prefix = positions[:first]
    if not first or any(learner.local_layers[i].training for pos in prefix for i in pos):
        return 0, x
    tensors = [t for pos in prefix for i in pos for t in (*learner.layers[i].parameters(),
                                                          *learner.layers[i].buffers())]
    token = (len(prefix), str(x.device), tuple((t.data_ptr(), t._version) for t in tensors))

    def compute(rows: Tensor) -> Tensor:
        with torch.no_grad():
            return cast(Tensor, learner.step_positions(rows, ctx, Stage("prefix", ()), prefix)[0])

    return first, cache.lookup(x, token, compute)
