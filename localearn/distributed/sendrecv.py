"""Pipeline messages on plain ``torch.distributed`` ``isend``/``recv`` (gloo on CPU, NCCL on CUDA).

The path between hosts and for device tensors (:mod:`.transport` chooses it). On the wire a
message is a fixed int64 header ``[kind, meta_len]``, the JSON meta (dtype and shape per tensor,
the scalars) as uint8, then each tensor in order. Gloo and NCCL deliver the messages of one
(src, dst) pair in order, so no tags are needed. Sends are asynchronous with at most ``depth``
messages in flight: each send buffer is kept alive until its ``Work.wait()`` returns, which is
what bounds memory.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from localearn.distributed.shm import dtype_of

KINDS = ("train", "eval", "end")


class DistChannel:
    """One peer's messages on ``isend``/``recv`` (see the module docstring); ``blocked``: seconds
    spent waiting for the peer."""

    def __init__(self, rank: int, peer: int, device: torch.device, depth: int) -> None:
        self.rank, self.peer, self.device, self.depth = rank, peer, device, depth
        self.blocked = 0.0
        self._inflight: deque[tuple[Any, list[Tensor]]] = deque()

    def send(self, kind: str, tensors: dict[str, Tensor | None], scalars: dict[str, Any]) -> int:
        live = [t.detach().contiguous() for t in tensors.values() if t is not None]
        meta = {"names": list(tensors), "scalars": scalars,
                "specs": [None if t is None else [str(t.dtype), list(t.shape)] for t in tensors.values()]}
        blob = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
        header = torch.tensor([KINDS.index(kind), blob.numel()], dtype=torch.int64)
        parts = [header.to(self.device), blob.to(self.device), *live]
        while len(self._inflight) >= self.depth:
            self._wait_oldest()
        # Buffers stay referenced until their Work completes (the deque holds them).
        self._inflight.append(([dist.isend(t, self.peer) for t in parts], parts))
        return sum(t.numel() * t.element_size() for t in parts)

    def flush(self) -> None:
        while self._inflight:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        works, _ = self._inflight.popleft()
        start = time.perf_counter()
        for work in works:
            work.wait()
        self.blocked += time.perf_counter() - start

    def recv(self) -> tuple[str, dict[str, Tensor | None], dict[str, Any]]:
        start = time.perf_counter()
        header = torch.empty(2, dtype=torch.int64, device=self.device)
        dist.recv(header, self.peer)
        kind, size = (int(v) for v in header.tolist())
        blob = torch.empty(size, dtype=torch.uint8, device=self.device)
        dist.recv(blob, self.peer)
        meta = json.loads(bytes(blob.cpu().tolist()).decode())
        out: dict[str, Tensor | None] = {}
        for name, spec in zip(meta["names"], meta["specs"], strict=True):
            out[name] = t = None if spec is None else torch.empty(spec[1], dtype=dtype_of(spec[0]),
                                                                     device=self.device)
            if t is not None:
                dist.recv(t, self.peer)
        self.blocked += time.perf_counter() - start
        return KINDS[kind], out, meta["scalars"]
