"""Readers of the measurement benchmarks' JSON (distributed, precision, kernels, overhead), and the
README's measured statements, each one sentence formatted from the newest JSON of its kind.

Split from ``results_readers.py`` so each file stays short; the records and helpers are shared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

from results_records import Record, command, data_arg, g, mib, n_of


def _runs(a: dict[str, Any]) -> list[dict[str, Any]]:
    """An arm's runs: the repeated-runs schema (``runs``) or the older single run (the arm itself)."""
    return a.get("runs") or [a]


def _accuracy(a: dict[str, Any]) -> str:
    acc = a["test_accuracy"]
    if not isinstance(acc, list):
        return g(acc)
    return g(acc[0]) + f" in each of {len(acc)} runs" if len(set(acc)) == 1 else \
        f"{g(median(acc))} (median of {len(acc)} runs)"


def _transports(a: dict[str, Any]) -> str:
    seen = {t for r in _runs(a)[0]["ranks"] for t in (r.get("transport") or {}).values()}
    return f", transport {'/'.join(sorted(seen))}" if seen else ""


def run_command(recorded: str) -> str:
    """A command a benchmark recorded for one run (``-m ...`` after the interpreter), as typed."""
    text = _no_out(recorded)
    text = text.replace("-m torch.distributed.run ", "torchrun ", 1)
    return text if text.startswith("torchrun ") else re.sub(r"^-m localearn ", "localearn ", text)


def distributed(d: dict[str, Any], src: str) -> Iterator[Record]:
    """``bench_distributed``: each arm's accuracy, throughput against the one-process arm, bytes sent."""
    s = d["settings"]
    args = {k: v for k, v in s.items() if k != "opt"}
    cmd = command("bench_distributed", args) + "".join(f" --opt {o}" for o in s.get("opt") or [])
    learners = sorted({a.split("_")[0] for a in d["arms"]})
    topics = ("distributed", *[{"mf": "mono_forward", "bp": "backprop"}.get(x, x) for x in learners])
    res = []
    for arm, a in d["arms"].items():
        ratio = d["throughput_ratios"].get(arm)
        sent = sum(r["bytes_sent"] for r in _runs(a)[0]["ranks"])
        res.append(f"{arm}: test accuracy {_accuracy(a)}" + (f", throughput **{g(ratio, '×')}**" if ratio else "")
                   + (f", {mib(sent)} sent per run" if sent else "") + _transports(a))
    reps = f", median of {n_of(s['repeats'], 'run')}" if s.get("repeats", 1) > 1 else ""
    setting = f"{s['dataset']} `{s['arch']}`, {n_of(s['epochs'], 'epoch')}, batch {s['batch_size']}{reps}"
    yield Record(src, d["date"], topics, setting, cmd, res)


def kernels(d: dict[str, Any], src: str) -> Iterator[Record]:
    cmd = command("bench_kernels", d["args"])
    for r in d["results"]:
        t, c = r["arms"]["torch"], r["arms"].get("compile")
        res = [f"eager {t['seconds'] * 1e3:.1f} ms"]
        if c:
            res += [f"compile {c['seconds'] * 1e3:.1f} ms ({g(c['speedup_vs_eager'], '×')})",
                    f"roofline {g(t['roofline_fraction'])} / {g(c['roofline_fraction'])}"]
        res.append(f"saved for backward {mib(t['peak_bytes'])}")
        yield Record(src, d["date"], ("kernels",), f"{r['op'].upper()} layer step, {r['rows']} rows × width "
                     f"{r['width']}, {r['dtype']}, {d['device']['type']}", cmd, res)


def overhead(d: dict[str, Any], src: str) -> Iterator[Record]:
    r = d["ratios_framework_over_plain"]
    yield Record(src, d["date"], ("overhead", "mono_forward", "backprop"),
                 f"one epoch of `localearn.fit` vs a plain torch loop, MNIST `{d['args']['arch']}`",
                 command("bench_overhead", d["args"]),
                 [f"CPU time framework/plain: MF **{g(r['mono_forward']['cpu'])}**, BP **{g(r['backprop']['cpu'])}**",
                  f"wall time: MF {g(r['mono_forward']['wall'])}, BP {g(r['backprop']['wall'])}"])


def _where(d: dict[str, Any]) -> str:
    dev = d["device"]
    return dev["name"] if dev["type"] == "cuda" else "cpu, flags " + (" ".join(d["cpu"]["flags"]) or "none")


def precision(d: dict[str, Any], src: str) -> Iterator[Record]:
    """``bench_precision``: per learner, each precision's median throughput against its fp32 arm."""
    s = d["setup"]
    cmd = _no_out(d["command"])
    for algo, arms in d["results"].items():
        base = arms["fp32"]
        res = [f"fp32 {base['median_samples_per_second']:.0f} samples/s, test accuracy {g(base['test_accuracy'])}"]
        res += [f"{pr}: throughput **{g(a['throughput_ratio_vs_fp32'], '×')}** of fp32, test accuracy "
                f"{g(a['test_accuracy'])} ({a['accuracy_delta_pp_vs_fp32']:+.2f} pp)"
                for pr, a in arms.items() if pr != "fp32"]
        runs = len(base["runs"])
        schedule = f", {s['mono_forward_schedule']}" if algo == "mono_forward" else ""
        yield Record(src, d["date"], ("precision", algo),
                     f"{algo}{schedule}, {s['dataset']} `{s['arch']}`, {n_of(s['epochs'], 'epoch')}, batch "
                     f"{s['batch_size']}, median of {n_of(runs, 'run')}, {_where(d)}", cmd, res)


def depth(d: dict[str, Any], src: str) -> Iterator[Record]:
    """``bench_depth``: peak saved bytes of DGL and backprop over model depth, and accuracy over the
    number of blocks one model is cut into."""
    a = d["args"]
    cmd = command("bench_depth", a)
    res = [f"{m['model']}: backprop {mib(m['backprop']['peak_saved_bytes'])}, DGL one block per residual block "
           f"({m['dgl_per_block']['blocks']}) **{mib(m['dgl_per_block']['peak_saved_bytes'])}** "
           f"({g(m['dgl_per_block']['ratio_to_backprop'], '×')}), DGL in 4 blocks "
           f"{mib(m['dgl_4']['peak_saved_bytes'])} ({g(m['dgl_4']['ratio_to_backprop'], '×')})" for m in d["memory"]]
    yield Record(src, d["date"], ("dgl", "depth"), f"peak saved-for-backward bytes, torchvision ResNets with the "
                 f"CIFAR stem, batch {a['batch_size']}, {n_of(a['batches'], 'step')}", cmd, res)
    if d.get("accuracy"):
        acc = [f"{r['algo']}" + (f" K = {r['blocks']}" if r["blocks"] else "") + f": test accuracy "
               f"**{g(r['test_accuracy'])}**, peak saved {mib(r['peak_saved_bytes'])}" for r in d["accuracy"]]
        yield Record(src, d["date"], ("dgl", "depth"), f"ResNet-18 cut into K blocks, cifar10_subset without "
                     f"augmentation, {n_of(a['epochs'], 'epoch')}, batch {a['batch_size']}, seed {a['seed']}",
                     cmd, acc)


def _no_out(recorded: str) -> str:
    return re.sub(r" --out \S+", "", data_arg(recorded))


def _newest(root: Path, pattern: str) -> tuple[dict[str, Any], str]:
    found = sorted((root / "benchmarks" / "results").glob(pattern), key=lambda p: (p.name[-15:], p.name))
    if not found:
        raise ValueError(f"no committed result matches benchmarks/results/{pattern}")
    return json.loads(found[-1].read_text(encoding="utf-8")), found[-1].relative_to(root).as_posix()


def statement(name: str, root: Path) -> str:
    """A measured sentence for the README: ``precision`` (bf16 against fp32, Mono-Forward, the CPU's
    flags) or ``pipeline`` (two pipeline ranks against one process, with the command)."""
    if name == "precision":
        d, src = _newest(root, "precision_*_cpu_*.json")
        fp32, bf16, s = d["results"]["mono_forward"]["fp32"], d["results"]["mono_forward"]["bf16"], d["setup"]
        return (f"**bf16 on a CPU:** Mono-Forward on MNIST `{s['arch']}` ({s['mono_forward_schedule']} schedule, "
                f"{n_of(s['epochs'], 'epoch')}, batch {s['batch_size']}) trains at "
                f"**{g(bf16['throughput_ratio_vs_fp32'], '×')}** fp32's throughput "
                f"({bf16['median_samples_per_second']:.0f} vs {fp32['median_samples_per_second']:.0f} samples/s, "
                f"median of {n_of(len(fp32['runs']), 'run')}) at test accuracy {g(bf16['test_accuracy'])} vs "
                f"{g(fp32['test_accuracy'])} ({bf16['accuracy_delta_pp_vs_fp32']:+.2f} pp); measured {d['date']} "
                f"on {d['cpu']['threads']} threads of a CPU ({d['cpu']['model']}) with the flags "
                f"{', '.join(d['cpu']['flags']) or 'none'}: `{_no_out(d['command'])}` "
                f"(`{src}`).\n")
    if name == "pipeline":
        d, src = _newest(root, "distributed_mlp-4x1000_cpu_*.json")
        pipe, one = d["arms"]["mf_pipeline2"], d["arms"]["mf_1proc"]
        s = d["settings"]
        return (f"**Two pipeline ranks on one host:** Mono-Forward on MNIST `{s['arch']}` "
                f"({n_of(s['epochs'], 'epoch')}, batch {s['batch_size']}, {n_of(s['threads'], 'thread')} per process) "
                f"trains at "
                f"**{g(d['throughput_ratios']['mf_pipeline2'], '×')}** one process's throughput "
                f"({pipe['median_samples_per_second']:.0f} vs {one['median_samples_per_second']:.0f} samples/s, "
                f"median of {n_of(s.get('repeats', 1), 'run')}{_transports(pipe)}), test accuracy "
                f"{_accuracy(pipe)} vs {_accuracy(one)}; measured {d['date']}: "
                f"`{run_command(_runs(pipe)[0]['command'])}` against the same without `torchrun` and "
                f"`--parallel pipeline` (`{command('bench_distributed', {k: v for k, v in s.items() if k != 'opt'})}`, "
                f"`{src}`).\n")
    raise ValueError(f"unknown measured statement {name!r}")
