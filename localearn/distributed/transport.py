"""Point-to-point messages between pipeline ranks on plain ``torch.distributed`` send/recv.

A message is a dict of tensors (or None) plus a few JSON-able scalars. On the wire it is a
fixed int64 header ``[kind, meta_len]``, the JSON meta (dtype, shape per tensor, the scalars)
as uint8, then each tensor in order. Gloo and NCCL deliver the messages of one (src, dst) pair
in order, so no tags are needed; traffic only flows forward (rank r to r+1), so blocking on both
sides cannot form the send/recv cycle that deadlocks gloo (notes/distributed_postgres_kernels.md,
A1). Sends are asynchronous (``isend``) with at most ``depth`` messages in flight per link: each
send buffer is kept alive until its ``Work.wait()`` returns, which is what bounds memory.

Every byte sent and every second spent blocked (waiting for a peer) is counted for ``run.json``.
A peer that died surfaces as one :class:`~localearn.errors.LocalearnError` naming it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from localearn.errors import LocalearnError

KINDS = ("train", "eval")
_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                               torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}


class Link:
    """Messages to ``dst`` / from ``src`` for this rank, with byte and wait accounting."""

    def __init__(self, rank: int, device: torch.device, depth: int = 2) -> None:
        self.rank, self.device, self.depth = rank, device, max(1, int(depth))
        self.bytes_sent = 0
        self.wait_seconds = 0.0
        self._inflight: deque[tuple[Any, list[Tensor]]] = deque()

    # ------------------------------------------------------------------------------- sending
    def send(self, dst: int, kind: str, tensors: dict[str, Tensor | None], scalars: dict[str, Any]) -> None:
        """Queue one message to ``dst``; blocks only while ``depth`` earlier messages are in flight."""
        names = list(tensors)
        live = [t.detach().contiguous() for t in tensors.values() if t is not None]
        meta = {"names": names,
                "specs": [None if t is None else [str(t.dtype), list(t.shape)] for t in tensors.values()],
                "scalars": scalars}
        blob = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
        header = torch.tensor([KINDS.index(kind), blob.numel()], dtype=torch.int64)
        parts = [header.to(self.device), blob.to(self.device), *live]
        while len(self._inflight) >= self.depth:
            self._wait_oldest(dst)
        works = [self._guard(dst, lambda t=t: dist.isend(t, dst)) for t in parts]
        self._inflight.append((works, parts))
        self.bytes_sent += sum(t.numel() * t.element_size() for t in parts)

    def flush(self, dst: int) -> None:
        """Wait for every message in flight (end of an epoch, before a checkpoint)."""
        while self._inflight:
            self._wait_oldest(dst)

    def _wait_oldest(self, dst: int) -> None:
        works, _ = self._inflight.popleft()
        start = time.perf_counter()
        for work in works:
            self._guard(dst, work.wait)
        self.wait_seconds += time.perf_counter() - start

    # ----------------------------------------------------------------------------- receiving
    def recv(self, src: int, expect: str) -> tuple[dict[str, Tensor | None], dict[str, Any]]:
        """The next message from ``src``; it must be of kind ``expect`` (the ranks' loops agree)."""
        start = time.perf_counter()
        header = torch.empty(2, dtype=torch.int64, device=self.device)
        self._guard(src, lambda: dist.recv(header, src))
        kind, size = (int(v) for v in header.tolist())
        if KINDS[kind] != expect:
            raise LocalearnError(f"rank {self.rank}: expected a {expect} message from rank {src}, got {KINDS[kind]}; "
                                 "the ranks run different schedules (same command and options on every rank?)")
        blob = torch.empty(size, dtype=torch.uint8, device=self.device)
        self._guard(src, lambda: dist.recv(blob, src))
        meta = json.loads(bytes(blob.cpu().tolist()).decode())
        out: dict[str, Tensor | None] = {}
        for name, spec in zip(meta["names"], meta["specs"], strict=True):
            if spec is None:
                out[name] = None
                continue
            t = torch.empty(spec[1], dtype=_DTYPES[spec[0]], device=self.device)
            self._guard(src, lambda t=t: dist.recv(t, src))
            out[name] = t
        self.wait_seconds += time.perf_counter() - start
        return out, meta["scalars"]

    def _guard(self, peer: int, call: Any) -> Any:
        return guarded(self.rank, f"rank {peer}", call)


def guarded(rank: int, peer: str, call: Any) -> Any:
    """Run a send, receive or collective; a dead or silent peer becomes one clear error."""
    try:
        return call()
    except (RuntimeError, dist.DistError) as exc:  # gloo: "Connection closed by peer", timeouts
        raise LocalearnError(
            f"rank {rank}: lost {peer} ({str(exc).splitlines()[0][:160]}); the job stops. "
            "Its per-rank checkpoints resume it (torchrun --max-restarts N, or --resume)") from exc


def pack_context(ctx: Any) -> tuple[dict[str, Tensor | None], dict[str, Any]]:
    """A layer Context's labels and extras as message tensors and scalars."""
    tensors: dict[str, Tensor | None] = {"y": ctx.y}
    scalars: dict[str, Any] = {}
    for key, value in ctx.extras.items():
        if value is None or isinstance(value, Tensor):
            tensors["x:" + key] = value
        elif isinstance(value, (bool, int, float, str)):
            scalars[key] = value
        else:
            raise LocalearnError(f"context value {key!r} ({type(value).__name__}) cannot cross a pipeline link; "
                                 "only tensors and plain scalars can")
    return tensors, scalars


def unpack_context(tensors: dict[str, Tensor | None], scalars: dict[str, Any], num_classes: int) -> Any:
    """The inverse of :func:`pack_context`."""
    from localearn.layer import Context

    extras: dict[str, Any] = {k[2:]: v for k, v in tensors.items() if k.startswith("x:")}
    extras.update(scalars)
    return Context(y=tensors.get("y"), num_classes=num_classes, extras=extras)
