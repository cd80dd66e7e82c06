"""Pipeline messages: the shared-memory path on one host, the torch.distributed fallback (issue #20).

A message must come out as it went in (every dtype the link takes, None, scalars, in order), on
either path; ``auto`` must pick shared memory between two local CPU ranks and fall back when the
peer cannot reach it, a forced path must be obeyed or refused with the reason, and nothing may
outlive a link: no descriptor or mapping after ``close``, no file under /dev/shm after a peer is
SIGKILLed, whose death is one clear error.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from localearn.distributed import shm
from localearn.distributed.sendrecv import DistChannel
from localearn.distributed.transport import DTYPES, ENV, Link
from localearn.errors import ConfigError

pytestmark = pytest.mark.skipif(bool(shm.available()), reason=shm.available() or "")


def _message(seed: int) -> dict[str, torch.Tensor | None]:
    """One tensor of every dtype the link takes (odd shapes, a 0-d, an empty, a strided view), and a None."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor | None] = {}
    for i, dtype in enumerate(DTYPES):
        base = torch.randn(3, 5 + i, generator=g) * 50
        out[str(dtype)] = base > 0 if dtype == torch.bool else base.to(dtype)
    out["scalar"] = torch.tensor(float(seed))
    out["empty"] = torch.empty(0, 7, dtype=torch.int64)
    out["strided"] = torch.arange(40.0).view(5, 8).t()[::2]  # not contiguous
    out["missing"] = None
    return out


def _same(got: dict[str, torch.Tensor | None], sent: dict[str, torch.Tensor | None]) -> None:
    assert list(got) == list(sent)
    for name, t in sent.items():
        r = got[name]
        if t is None:
            assert r is None, name
        else:
            assert r is not None and r.dtype == t.dtype and r.shape == t.shape and torch.equal(r, t), name


def _pair() -> tuple[shm.ShmChannel, shm.ShmChannel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return shm.ShmChannel(a, 2, 30.0), shm.ShmChannel(b, 2, 30.0)


def _memfds() -> list[str]:
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if fd.isdigit()
           and os.path.exists(f"/proc/self/fd/{fd}")]
    maps = Path("/proc/self/maps").read_text().splitlines()
    return [x for x in fds + maps if "localearn-link" in x]


def test_every_dtype_none_and_scalars_round_trip_in_order_through_shared_memory() -> None:
    sender, receiver = _pair()
    try:
        sent = [(_message(k), {"k": k, "tag": f"m{k}", "flag": k % 2 == 0}) for k in range(5)]
        got = []
        for k, (tensors, scalars) in enumerate(sent):
            sender.send("train" if k < 4 else "eval", tensors, scalars)
            if k % 2:  # two in flight, then both taken: order is kept across the slots
                got += [receiver.recv(), receiver.recv()]
        got.append(receiver.recv())
        sender.flush()
        assert [g[0] for g in got] == ["train"] * 4 + ["eval"]
        for (_, tensors, scalars), (want, want_scalars) in zip(got, sent, strict=True):
            _same(tensors, want)
            assert scalars == want_scalars
        # What was received is the receiver's own: later messages through the same slot leave it alone.
        first = got[0][1]["torch.float32"]
        assert first is not None
        sender.send("train", {"h": torch.full((3, 5), 7.0)}, {})
        receiver.recv()
        assert torch.equal(first, sent[0][0]["torch.float32"])  # type: ignore[arg-type]
    finally:
        sender.close()
        receiver.close()


def test_a_slot_grows_for_a_larger_message_and_nothing_outlives_close() -> None:
    sender, receiver = _pair()
    small, big = torch.arange(10.0), torch.arange(300_000.0).view(600, 500)
    for t in (small, small, big, big, small):  # both slots start small, then each must grow
        sender.send("eval", {"h": t}, {})
        _same(receiver.recv()[1], {"h": t})
    assert all(s is not None and s.size >= big.numel() * 4 for s in sender.slots)
    assert _memfds()  # the slots are live memfd mappings while the link is open
    sender.close()
    receiver.close()
    del sender, receiver
    assert _memfds() == []  # no descriptor, no mapping: nothing for the kernel to keep


def test_a_closed_peer_is_an_error_not_a_hang() -> None:
    sender, receiver = _pair()
    receiver.close()
    with pytest.raises(OSError):
        for _ in range(4):  # more than the depth: the sender must wait for a slot, and the peer is gone
            sender.send("train", {"h": torch.ones(4)}, {})
    sender.close()


def test_device_tensors_take_the_dist_path_and_forcing_shm_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    link = Link(0, torch.device("cuda"), 2)  # no handshake, no CUDA call: the choice is local
    assert isinstance(link._channel(link._out, 1, link._offer), DistChannel)
    monkeypatch.setenv(ENV, "shm")
    forced = Link(0, torch.device("cuda"), 2)
    with pytest.raises(ConfigError, match=f"{ENV}=shm, but the link with rank 1 cannot use shared memory: "
                                          "its tensors are on cuda"):
        forced._channel(forced._out, 1, forced._offer)
    monkeypatch.setenv(ENV, "sockets")
    with pytest.raises(ConfigError, match=f"{ENV}='sockets' is not a pipeline transport; valid: auto, shm, dist"):
        Link(0, torch.device("cpu"), 2)


# ----------------------------------------------------------------------- two real gloo ranks
def _worker(rank: int, port: int, env: dict[str, str], body: Callable[[int, Link], Any], out: Any) -> None:
    os.environ.update(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    link = Link(rank, torch.device("cpu"), 2, timeout=60)
    try:
        out.put((rank, "ok", body(rank, link), link.transports(), link.bytes_sent))
    except Exception as exc:
        out.put((rank, type(exc).__name__, str(exc), {}, 0))
    link.close()
    out.close()
    out.join_thread()  # the report is written before the process ends
    os._exit(0)  # no teardown handshake: a rank may have left on an error


def _ranks(body: Callable[[int, Link], Any], envs: tuple[dict[str, str], dict[str, str]] = ({}, {}),
           reports: int = 2) -> tuple[list[tuple[Any, ...]], list[int | None]]:
    """``body(rank, link)`` on two forked gloo ranks: the first ``reports`` (rank, status, result,
    transports, bytes) in rank order, and each process's exit code."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, envs[r], body, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        results = sorted(out.get(timeout=120) for _ in range(reports))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return results, [p.exitcode for p in procs]


def _stream(rank: int, link: Link) -> Any:
    if rank == 0:
        for k in range(6):
            link.send(1, "train", _message(k), {"k": k})
        link.end(1)
        link.send(1, "eval", {"h": torch.ones(2)}, {})
        link.flush(1)
        return None
    got = [(tensors, scalars["k"]) for tensors, scalars in link.stream(0, "train")]
    for tensors, k in got:
        _same(tensors, _message(k))
    last, _ = link.recv(0, "eval")
    return [k for _, k in got] + [float(last["h"].sum())]  # type: ignore[union-attr]


@pytest.mark.parametrize(("mode", "path"), [("auto", "shm"), ("dist", "gloo"), ("shm", "shm")])
def test_two_ranks_on_one_host_take_the_chosen_path_in_order(mode: str, path: str) -> None:
    (_, s0, _, t0, sent), (_, s1, got, t1, _) = _ranks(_stream, ({ENV: mode}, {ENV: "auto"}))[0]
    assert (s0, s1) == ("ok", "ok"), got
    assert got == [0, 1, 2, 3, 4, 5, 2.0]  # every message, in order, then the end, then an eval message
    assert t0 == {"to 1": path} and t1 == {"from 0": path}
    assert sent > 6 * sum(t.numel() * t.element_size() for t in _message(0).values() if t is not None)


def _unreachable(rank: int, link: Link) -> Any:
    if rank == 1:
        def refuse(token: str, timeout: float) -> socket.socket:
            raise ConnectionRefusedError(111, "Connection refused")
        shm.connect = refuse  # as if the sender were on another host (this forked process only)
    return _stream(rank, link)


def test_a_peer_that_cannot_reach_shared_memory_falls_back_or_is_refused_when_forced() -> None:
    (_, s0, _, t0, _), (_, s1, got, t1, _) = _ranks(_unreachable)[0]
    assert (s0, s1, got[-1]) == ("ok", "ok", 2.0) and t0 == {"to 1": "gloo"} and t1 == {"from 0": "gloo"}
    (_, s0, e0, _, _), (_, s1, e1, _, _) = _ranks(_unreachable, ({ENV: "shm"}, {}))[0]
    assert (s0, s1) == ("ConfigError", "ConfigError")
    assert f"{ENV}=shm, but the link with rank 1 cannot use shared memory" in e0
    assert "rank 0 is on another host (Connection refused)" in e1


def _killed(rank: int, link: Link) -> Any:
    if rank == 1:
        link.recv(0, "train")
        os.kill(os.getpid(), signal.SIGKILL)
    for k in range(10):  # more than the depth: the sender waits on the dead peer
        link.send(1, "train", {"h": torch.ones(64, 64)}, {"k": k})
    return None


def test_a_sigkilled_peer_is_one_lost_peer_error_and_leaves_no_shared_memory_file() -> None:
    before = set(os.listdir("/dev/shm"))
    [(rank, status, message, transports, _)], codes = _ranks(_killed, reports=1)
    assert codes[1] == -signal.SIGKILL and (rank, status, transports) == (0, "LocalearnError", {})
    assert message.startswith("rank 0: lost rank 1 (") and "resume" in message
    assert set(os.listdir("/dev/shm")) - before == set()
