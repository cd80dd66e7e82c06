"""Point-to-point messages between pipeline ranks: shared memory on one host, else torch.distributed.

A message is a dict of tensors (or None) plus a few JSON-able scalars, of a kind: ``train``,
``eval``, or ``end`` (the epoch's last training message has gone; the next rank stops iterating
instead of counting batches of its own). Traffic only flows forward (rank r to r+1), so blocking
on both sides cannot form the send/recv cycle that deadlocks gloo
(docs/guides/distributed.md#transport). Every link keeps at most ``depth`` messages in
flight, which is what bounds memory.

Two paths, chosen per link by a handshake on the link's first message:

* **shm** (:mod:`.shm`): both ranks on one host, CPU tensors, Linux. One copy into a shared slot,
  one short note on a Unix socket, one copy out. The default where it can run.
* **dist** (:mod:`.sendrecv`): plain ``torch.distributed`` ``isend``/``recv`` (gloo on CPU,
  NCCL on CUDA), a header, the JSON meta, then each tensor. Across hosts and for device tensors.

``LOCALEARN_PIPELINE_TRANSPORT=auto|shm|dist`` forces a path (``auto``, the default, takes shm
where it can); forcing shm where it cannot run is one clear error naming why. Every byte sent
and every second spent blocked on a peer is counted for ``run.json``. A peer that died surfaces
as one :class:`~localearn.errors.LocalearnError` naming it, on either path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from localearn.distributed import shm
from localearn.distributed.sendrecv import DistChannel
from localearn.errors import ConfigError, LocalearnError
from localearn.layer import Context

MODES = ("auto", "shm", "dist")
ENV = "LOCALEARN_PIPELINE_TRANSPORT"
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool)
_MAGIC = 0x10CA1EA2  # first word of a handshake offer / reply
Message = tuple[dict[str, Tensor | None], dict[str, Any]]


def transport_mode() -> str:
    """The path asked for by ``LOCALEARN_PIPELINE_TRANSPORT`` (``auto`` when unset)."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ConfigError(f"{ENV}={mode!r} is not a pipeline transport; valid: {', '.join(MODES)}")
    return mode


class Link:
    """Messages to ``dst`` / from ``src`` for this rank, with byte and wait accounting."""

    def __init__(self, rank: int, device: torch.device, depth: int = 2, timeout: float = 120.0) -> None:
        self.rank, self.device, self.depth, self.timeout = rank, device, max(1, int(depth)), float(timeout)
        self.mode = transport_mode()
        self._out: dict[int, Any] = {}  # peer -> its channel (DistChannel or shm.ShmChannel)
        self._in: dict[int, Any] = {}
        self._sent = 0
        self._handshake_wait = 0.0

    @property
    def bytes_sent(self) -> int:
        return self._sent

    @property
    def wait_seconds(self) -> float:
        return self._handshake_wait + sum(c.blocked for c in (*self._out.values(), *self._in.values()))

    def transports(self) -> dict[str, str]:
        """Which path each open link took, e.g. ``{"to 1": "shm"}`` (for ``run.json``)."""
        return {**{f"to {p}": _name(c) for p, c in self._out.items()},
                **{f"from {p}": _name(c) for p, c in self._in.items()}}

    # ------------------------------------------------------------------------------- sending
    def send(self, dst: int, kind: str, tensors: dict[str, Tensor | None], scalars: dict[str, Any]) -> None:
        """Queue one message to ``dst``; blocks only while ``depth`` earlier messages are in flight."""
        for name, t in tensors.items():
            if t is not None and t.dtype not in DTYPES:
                raise LocalearnError(f"{name!r} ({t.dtype}) cannot cross a pipeline link; dtypes that can: "
                                     + ", ".join(str(d).removeprefix("torch.") for d in DTYPES))
        channel = self._channel(self._out, dst, self._offer)
        self._sent += self._guard(dst, lambda: channel.send(kind, tensors, scalars))

    def end(self, dst: int) -> None:
        """Tell ``dst`` that the epoch's training messages are all sent."""
        self.send(dst, "end", {}, {})

    def flush(self, dst: int) -> None:
        """Wait for every message in flight (end of an epoch, before a checkpoint)."""
        if dst in self._out:
            self._guard(dst, self._out[dst].flush)

    # ----------------------------------------------------------------------------- receiving
    def recv(self, src: int, expect: str) -> Message:
        """The next message from ``src``; it must be of kind ``expect`` (the ranks' loops agree)."""
        kind, tensors, scalars = self._next(src)
        if kind != expect:
            raise LocalearnError(f"rank {self.rank}: expected a {expect} message from rank {src}, got {kind}; "
                                 "the ranks run different schedules (same command and options on every rank?)")
        return tensors, scalars

    def stream(self, src: int, kind: str = "train") -> Iterator[Message]:
        """Messages of ``kind`` from ``src`` until its ``end`` message."""
        while True:
            got, tensors, scalars = self._next(src)
            if got == "end":
                return
            if got != kind:
                raise LocalearnError(f"rank {self.rank}: expected a {kind} message from rank {src}, got {got}")
            yield tensors, scalars

    def _next(self, src: int) -> tuple[str, dict[str, Tensor | None], dict[str, Any]]:
        channel = self._channel(self._in, src, self._answer)
        return self._guard(src, channel.recv)

    def close(self) -> None:
        """Close every shared-memory link (the dist path's links belong to the process group)."""
        for channel in (*self._out.values(), *self._in.values()):
            if isinstance(channel, shm.ShmChannel):
                channel.close()
        self._out, self._in = {}, {}

    # ----------------------------------------------------------------------------- handshake
    def _channel(self, table: dict[int, Any], peer: int, opener: Any) -> Any:
        if peer not in table:
            start = time.perf_counter()
            table[peer] = opener(peer)
            self._handshake_wait += time.perf_counter() - start
        return table[peer]

    def _local(self) -> str:
        """Why this rank cannot use shared memory ("" : it can)."""
        if self.device.type != "cpu":
            return f"its tensors are on {self.device.type}"
        return "it is set to dist" if self.mode == "dist" else shm.available()

    def _offer(self, dst: int) -> Any:
        """Sender side: offer a socket over torch.distributed, then take the peer's answer."""
        if self.device.type != "cpu":  # every rank has the same device type: no handshake
            return self._dist(dst, self._local())
        why = self._local()
        server, token = shm.listen() if not why else (None, "0" * 32)
        try:
            words = [int.from_bytes(bytes.fromhex(token[i:i + 16]), "big", signed=True) for i in (0, 16)]
            offer = torch.tensor([_MAGIC, MODES.index(self.mode), int(not why), *words], dtype=torch.int64)
            reply = torch.zeros(2, dtype=torch.int64)
            self._guard(dst, lambda: dist.send(offer, dst))
            self._guard(dst, lambda: dist.recv(reply, dst))
            answer = int(reply[1])
            if answer == 1 and server is not None:
                sock = self._guard(dst, lambda: shm.accept(server, self.timeout))
                return shm.ShmChannel(sock, self.depth, self.timeout)
        finally:
            if server is not None:
                server.close()
        return self._dist(dst, why or f"rank {dst} could not reach it (another host, or no shared memory there)",
                          forced=answer == -1)

    def _answer(self, src: int) -> Any:
        """Receiver side: connect to the offered socket if both sides may; answer the sender."""
        if self.device.type != "cpu":
            return self._dist(src, self._local())
        offer = torch.zeros(5, dtype=torch.int64)
        self._guard(src, lambda: dist.recv(offer, src))
        if int(offer[0]) != _MAGIC:
            raise LocalearnError(f"rank {self.rank}: rank {src} opened the pipeline link with an unknown handshake "
                                 "(the same localearn version on every rank?)")
        peer_mode, why = MODES[int(offer[1])], self._local()
        if not why and peer_mode == "dist":
            why = f"rank {src} is set to dist"
        elif not why and not int(offer[2]):
            why = f"rank {src} cannot share memory"
        sock = None
        if not why:
            token = "".join(int(w).to_bytes(8, "big", signed=True).hex() for w in offer[3:])
            try:
                sock = shm.connect(token, self.timeout)
            except OSError as exc:
                why = f"rank {src} is on another host ({exc.strerror or exc})"
        forced = "shm" in (self.mode, peer_mode)
        answer = 1 if sock is not None else (-1 if forced else 0)
        self._guard(src, lambda: dist.send(torch.tensor([_MAGIC, answer], dtype=torch.int64), src))
        if sock is not None:
            return shm.ShmChannel(sock, self.depth, self.timeout)
        return self._dist(src, why, forced)

    def _dist(self, peer: int, why: str, forced: bool = False) -> DistChannel:
        if self.mode == "shm" or forced:
            raise ConfigError(f"rank {self.rank}: {ENV}=shm, but the link with rank {peer} cannot use shared "
                              f"memory: {why or 'the other rank could not'}; use auto or dist")
        return DistChannel(self.rank, peer, self.device, self.depth)

    def _guard(self, peer: int, call: Any) -> Any:
        try:
            return guarded(self.rank, f"rank {peer}", call)
        except (OSError, EOFError) as exc:  # the shared-memory path: the peer's socket closed or timed out
            raise lost(self.rank, f"rank {peer}", exc) from exc


def _name(channel: Any) -> str:
    return "shm" if isinstance(channel, shm.ShmChannel) else str(dist.get_backend())


def lost(rank: int, peer: str, exc: BaseException) -> LocalearnError:
    """The one error a dead or silent peer becomes."""
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160] or type(exc).__name__
    return LocalearnError(f"rank {rank}: lost {peer} ({reason}); the job stops. "
                          "Its per-rank checkpoints resume it (torchrun --max-restarts N, or --resume)")


def guarded(rank: int, peer: str, call: Any) -> Any:
    """Run a send, receive or collective; a dead or silent peer becomes one clear error."""
    try:
        return call()
    except (RuntimeError, dist.DistError) as exc:  # gloo: "Connection closed by peer", timeouts
        raise lost(rank, peer, exc) from exc


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
    extras: dict[str, Any] = {k[2:]: v for k, v in tensors.items() if k.startswith("x:")}
    extras.update(scalars)
    return Context(y=tensors.get("y"), num_classes=num_classes, extras=extras)
