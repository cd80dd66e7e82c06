"""Pipeline messages between two ranks on one host through shared memory (Linux: memfd_create(2),
unix(7) ``SOCK_SEQPACKET``, ``SCM_RIGHTS`` and the abstract namespace).

The ``torch.distributed`` path (:mod:`.sendrecv`) moves every tensor of a message as its own
gloo send: a TCP write into the kernel, a read out of it and a wake-up of gloo's loop thread,
400-1300 µs of CPU per 0.5 MB message on each side of a busy 2-core machine (issue #20, item 5).
Here the sender copies a message's tensors once into a preallocated slot of shared memory and
posts a short JSON note (kind, slot, dtype/shape/offset per tensor, scalars) on a Unix socket;
the receiver blocks in ``recvmsg`` (no busy-waiting, no helper thread), copies the tensors out
of the slot and acknowledges it, which frees the slot: 50-60 µs per message on each side. There
are ``depth`` slots per link, so at most ``depth`` messages are in flight, as on the gloo path.

Nothing can leak on any exit path: a slot is an anonymous ``memfd`` (no name under
``/dev/shm``) whose descriptor travels to the peer with the note that first uses it and is then
closed on both sides, so only the two mappings hold it; the socket lives in the abstract
namespace (no file either) and takes only a peer of the same user. The kernel frees both when
the last process holding them exits or drops them, SIGKILL included. A closed or reset socket is
the peer's death, raised as the same one-line error as on the gloo path. A slot grows (a new
memfd) when a message does not fit, e.g. the first evaluation batch after training batches.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import sys
import time
import uuid
from collections import deque
from typing import Any

import torch
from torch import Tensor

from localearn.errors import LocalearnError

ALIGN = 64  # each tensor starts on a cache line (and on any dtype's alignment)
NOTE_BYTES = 1 << 16  # the largest JSON note a message may post


def available() -> str:
    """Why shared memory cannot carry messages on this system ("" : it can)."""
    if not sys.platform.startswith("linux"):
        return f"shared-memory links need Linux (abstract sockets, memfd), not {sys.platform}"
    if not (hasattr(os, "memfd_create") and hasattr(socket, "send_fds")):
        return "this Python has no os.memfd_create / socket.send_fds"
    return ""


def listen() -> tuple[socket.socket, str]:
    """A listening socket under a fresh, unguessable abstract name (the sender's side)."""
    token = uuid.uuid4().hex
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind("\0localearn-" + token)
    server.listen(1)
    return server, token


def connect(token: str, timeout: float) -> socket.socket:
    """Connect to a sender's :func:`listen` socket; raises OSError when it is not on this host."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(timeout)
    try:
        sock.connect("\0localearn-" + token)
        _same_user(sock)
    except OSError:
        sock.close()
        raise
    return sock


def accept(server: socket.socket, timeout: float) -> socket.socket:
    """The receiver's connection to a :func:`listen` socket."""
    server.settimeout(timeout)
    sock = server.accept()[0]
    try:
        _same_user(sock)
    except OSError:
        sock.close()
        raise
    return sock


def _same_user(sock: socket.socket) -> None:
    """Abstract socket names are listed in /proc/net/unix: accept only a peer of this user."""
    uid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if uid != os.getuid():
        raise PermissionError(f"a process of user {uid} is on the other end of the pipeline's socket")


class _Slot:
    """One shared buffer: a memfd's mapping and a uint8 tensor over it. The mapping alone keeps
    the memory alive, so no descriptor is held past the note that hands it over (``fd``: the
    sender's, until then; -1 after)."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        self.size, self.fd = size, -1
        if fd is None:  # the sender's new slot
            fd = self.fd = os.memfd_create("localearn-link", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        try:
            self.map = mmap.mmap(fd, size)
        finally:
            if self.fd < 0:  # the receiver's copy of the descriptor is no longer needed
                os.close(fd)
        self.bytes = torch.frombuffer(self.map, dtype=torch.uint8)

    def view(self, offset: int, dtype: torch.dtype, shape: list[int]) -> Tensor:
        count = 1
        for n in shape:
            count *= n
        return self.bytes[offset:offset + count * dtype.itemsize].view(dtype).view(shape)

    def handed_over(self) -> None:
        """The peer holds the memfd now (or never will): drop the sender's descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ShmChannel:
    """One end of a shared-memory link: ``send``/``flush`` on the sender, ``recv`` on the receiver.

    ``blocked`` counts the seconds spent waiting for the peer (a free slot, the next note).
    Socket errors propagate as ``OSError`` (or ``EOFError`` for an orderly close); the caller
    turns them into the lost-peer error.
    """

    def __init__(self, sock: socket.socket, depth: int, timeout: float) -> None:
        self.sock, self.depth = sock, max(1, int(depth))
        self.sock.settimeout(timeout)
        self.slots: list[_Slot | None] = [None] * self.depth
        self.pending: deque[int] = deque()  # slots posted and not yet acknowledged, oldest first
        self.next = 0
        self.blocked = 0.0

    # ------------------------------------------------------------------------------- sending
    def send(self, kind: str, tensors: dict[str, Tensor | None], scalars: dict[str, Any]) -> int:
        """Copy the tensors into the next free slot and post the note; returns the bytes moved."""
        while len(self.pending) >= self.depth:
            self._ack()
        specs: list[Any] = []
        offset = 0
        for t in tensors.values():
            if t is None:
                specs.append(None)
                continue
            specs.append([str(t.dtype), list(t.shape), offset])
            offset += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
        index = self.next
        slot = self.slots[index]
        if slot is None or slot.size < offset:  # grow: a new memfd, handed over with this note
            slot = self.slots[index] = _Slot(max(offset, 2 * slot.size if slot else offset, ALIGN))
        for t, spec in zip(tensors.values(), specs, strict=True):
            if t is not None:
                slot.view(spec[2], t.dtype, spec[1]).copy_(t.detach())
        note = json.dumps({"kind": kind, "slot": index, "size": slot.size, "names": list(tensors),
                           "specs": specs, "scalars": scalars}).encode()
        if len(note) > NOTE_BYTES:
            raise LocalearnError(f"a pipeline message's description is {len(note)} bytes (at most {NOTE_BYTES})")
        if slot.fd >= 0:
            try:
                socket.send_fds(self.sock, [note], [slot.fd])
            finally:
                slot.handed_over()
        else:
            self.sock.sendall(note)
        self.pending.append(index)
        self.next = (index + 1) % self.depth
        return offset + len(note)

    def flush(self) -> None:
        """Wait until the peer has taken every posted message."""
        while self.pending:
            self._ack()

    def _ack(self) -> None:
        start = time.perf_counter()
        got = self.sock.recv(8)
        self.blocked += time.perf_counter() - start
        if not got:
            raise EOFError("connection closed by peer")
        expected = self.pending.popleft()
        if got[0] != expected % 256:
            raise ConnectionError(f"acknowledgement for slot {got[0]}, expected slot {expected}")

    # ----------------------------------------------------------------------------- receiving
    def recv(self) -> tuple[str, dict[str, Tensor | None], dict[str, Any]]:
        """The next message: its kind, tensors (copied out of the slot) and scalars."""
        start = time.perf_counter()
        note, fds, flags, _ = socket.recv_fds(self.sock, NOTE_BYTES, 1)
        self.blocked += time.perf_counter() - start
        if not note:
            raise EOFError("connection closed by peer")
        if flags & socket.MSG_TRUNC:
            raise ConnectionError("a pipeline message's description was cut short")
        meta = json.loads(note)
        index = meta["slot"]
        if fds:  # the sender grew this slot: map the new memfd (the old mapping goes with its last view)
            self.slots[index] = _Slot(meta["size"], fds[0])
        slot = self.slots[index]
        assert slot is not None, "a note named a slot that was never shared"
        out: dict[str, Tensor | None] = {}
        for name, spec in zip(meta["names"], meta["specs"], strict=True):
            out[name] = None if spec is None else slot.view(spec[2], dtype_of(spec[0]), spec[1]).clone()
        self.sock.sendall(bytes([index % 256]))  # the slot is free again
        return meta["kind"], out, meta["scalars"]

    def close(self) -> None:
        """Close the socket and drop the slots (their memory goes with the last view of it)."""
        for slot in self.slots:
            if slot is not None:
                slot.handed_over()
        self.slots = [None] * self.depth
        self.sock.close()


def dtype_of(name: str) -> torch.dtype:
    """``torch.float32`` from ``"torch.float32"``."""
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in a pipeline message")
    return dtype
