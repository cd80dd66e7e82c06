"""Every JSON under ``benchmarks/results`` read by its schema into :class:`Record` objects.

Each schema the benchmarks write has one reader below, chosen by the file's ``benchmark`` field
(or by its shape for ``run.json`` files and the NoProp re-scoring output); a JSON that no reader
knows is an error naming the file, so a new result cannot be silently left off the pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from results_measures import depth, distributed, kernels, overhead, precision
from results_records import (
    DATA,
    ROOT,
    Record,
    arch_flags,
    command,
    committed_date,
    data_arg,
    date_from,
    flag_value,
    g,
    mib,
    n_of,
    sec,
)


def run_json(d: dict[str, Any], src: str) -> Iterator[Record]:
    """A ``run.json`` kept as a result (``localearn train``)."""
    recipe = d.get("recipe") or {}
    cmd = d.get("benchmark") if str(d.get("benchmark", "")).startswith("localearn ") else None
    if cmd is None:
        from_recipe = {k for k, v in recipe.items() if str(v.get("source", "")).startswith("recipe:")}
        flags = [arch_flags(v["value"]) if k == "arch" else f"--{k.replace('_', '-')} {v['value']}"
                 for k, v in recipe.items() if v.get("source") == "cli"]
        opts = [arch_flags(v) if k == "arch" else f"--opt {k}={json.dumps(v) if not isinstance(v, str) else v}"
                for k, v in (d.get("learner_options") or {}).items()
                if k not in from_recipe and not (k == "arch" and recipe.get("arch", {}).get("source") == "cli")]
        data_opts = [f"--data-opt {k}={json.dumps(v) if not isinstance(v, str) else v}"
                     for k, v in (d.get("dataset_options") or {}).items()]
        cmd = " ".join([f"localearn train --algo {d['algorithm']} --dataset {d['dataset']}",
                        *([f"--data-dir {DATA}"] if d.get("data_dir") else []), *flags, *data_opts, *opts])
    m, hist = d["metrics"], d.get("history") or []
    units = ", ".join(f"{u['unit']} {u['epochs']} (best {u['best_epoch']})" for u in d.get("units", []))
    setting = f"{d['dataset']}, `{d['arch']}`, {d['schedule']}, seed {d['seed']}"
    if d["status"] == "complete":
        res = [f"test accuracy **{g(m['test_accuracy'])}** (val {g(m['val_accuracy'])})",
               f"epochs per unit (best): {units}", f"training {sec(m['train_seconds'])}",
               *([f"peak saved for backward {mib(m['peak_saved_activation_bytes'])}"]
                 if m.get("peak_saved_activation_bytes") else []),
               f"validation {sec(m['validate_seconds'])} (metered apart)"]
    else:
        curve = " / ".join(g(h["val_accuracy"]) for h in hist)
        last = g(hist[-1]["val_accuracy"]) if hist else "n/a"
        res = [f"status **{d['status']}** after {len(hist)} epochs (validation accuracy {last})",
               f"validation accuracy by epoch: {curve}",
               f"training {sec(m['train_seconds'])} + validation {sec(m['validate_seconds'])}"]
    yield Record(src, d.get("date") or date_from(src), (d["algorithm"],), setting, data_arg(cmd), res)


def rescored(d: dict[str, Any], src: str) -> Iterator[Record]:
    """``benchmarks/rescore_noprop_inference.py``: one run's weights under both inference paths."""
    s = d["scores"]
    yield Record(src, date_from(src), ("noprop",), f"saved NoProp-DT weights, {d['split']} split",
                 f"python benchmarks/rescore_noprop_inference.py RUN_DIR --split {d['split']} --data-dir {DATA}",
                 [f"stochastic {g(s['stochastic']['accuracy'])}", f"mean **{g(s['mean']['accuracy'])}**"])


def rows_bench(d: dict[str, Any], src: str) -> Iterator[Record]:
    """``bench_cafo`` / ``bench_forward_forward``: one row per arm (or collab mode)."""
    name = "bench_cafo" if "suite" in d else "bench_forward_forward"
    cmd = d["benchmark"] if str(d.get("benchmark", "")).startswith("python") else command(name, d["args"])
    if name == "bench_cafo" and not (ROOT / "benchmarks" / "bench_cafo.py").is_file() and "removed" not in cmd:
        cmd += " (script since removed)"
    for r in d["rows"]:
        if name == "bench_cafo":
            opts = ", ".join(f"{k}={v}" for k, v in {**r["learner_options"], **r["dataset_options"]}.items())
            per = " / ".join(g(v) for v in r["per_block_test_accuracy"].values())
            yield Record(src, d.get("date", "not recorded"), ("cafo",),
                         f"{r['dataset']}, {opts}, ≤ {d['args']['epochs']} epochs per predictor", data_arg(cmd),
                         [f"test accuracy **{g(r['test_accuracy'])}** (blocks {per})",
                          f"training {sec(r['train_seconds'])}"])
        else:
            per = " / ".join(g(v) for v in r["per_layer"].values())
            a = d.get("args") or {k: flag_value(cmd, k) for k in ("dataset", "arch")}
            yield Record(src, d["date"], ("forward_forward",),
                         f"{a['dataset']} `{a['arch']}`, collab={r['collab']}, {r['epochs']} epochs, "
                         f"seed {r['seed']}", data_arg(cmd),
                         [f"test accuracy **{g(r['test_accuracy'])}** (layers {per})",
                          f"training {sec(r['train_seconds'])}"])


def cff_analysis(d: dict[str, Any], src: str) -> Iterator[Record]:
    for arm, a in d["arms"].items():
        per = " / ".join(g(v) for v in a["acc_per_layer"])
        yield Record(src, d["date"], ("forward_forward",), f"trained collab={arm} network, 2 000 MNIST test images",
                     d["command"], [f"layers 2..L {g(a['acc_layers_2_L'])}", f"all layers **{g(a['acc_all_layers'])}**",
                                    f"each layer {per}"])


def counter_current(d: dict[str, Any], src: str) -> Iterator[Record]:
    a = d["args"]
    part = a["parts"]
    own = {"mlp": ("epochs_mlp", "batch_mlp"), "cnn": ("epochs_cnn",),
           "ae": ("epochs_ae", "batch_ae", "ae_arch", "ae_grid")}[part]
    keep = {"parts", "threads", "seed", "data_dir", *own}
    cmd = command("bench_counter_current", {k: v for k, v in a.items() if k in keep})
    topics = ("counter_current", "backprop")
    if part == "ae":
        e, sel = d["ae"], d["ae"]["selected"]
        res = [f"test MSE CCL {g(sel['ccl']['test_mse'])} / BP {g(sel['bp']['test_mse'])}: "
               f"**{g(e['ratios']['test_mse_ccl_over_bp'], '×')}**",
               f"one recipe for both: {g(e['ratios']['test_mse_ccl_over_bp_same_recipe'], '×')}",
               f"mean-image MSE {g(e['mean_image_test_mse'])}"]
        if "saved_bytes_ccl_over_bp_same_recipe" in e["ratios"]:
            res.append(f"saved bytes CCL/BP {g(e['ratios']['saved_bytes_ccl_over_bp_same_recipe'], '×')}")
        setting = f"MNIST autoencoder `{e['arch']}`, {e['epochs']} epochs, grid {e['grid']}"
    else:
        p = d[part]
        bp = p.get("backprop", p.get("backprop_relu_bias"))
        res = [f"test accuracy CCL **{g(p['ccl']['test_accuracy'])}** / BP {g(bp['test_accuracy'])}",
               f"peak saved bytes {g(p['ratios']['saved_bytes_vs_backprop'], '×')}",
               f"training {sec(p['ccl']['train_seconds'])} / {sec(bp['train_seconds'])}"]
        setting = {"mlp": "MNIST `mlp:784-5x256` classifier", "cnn": "CIFAR-10 subset CNN"}[part] + \
            f", {p['ccl']['epochs']} epochs"
    yield Record(src, d["date"], topics, setting, cmd, res, d.get("note", ""))



def ff_eval(d: dict[str, Any], src: str) -> Iterator[Record]:
    m = d["median_seconds"]
    yield Record(src, d["date"], ("forward_forward",), f"per-label evaluation, {d['samples']} MNIST test images",
                 command("bench_ff_eval", d["args"]),
                 [f"shared first layer / once per label: **{g(d['ratio_shared_over_once'], '×')}** "
                  f"({sec(m['shared_first_layer'])} vs {sec(m['once_per_label'])})",
                  f"prediction agreement {g(d['prediction_agreement'])}",
                  f"max relative score difference {g(d['max_relative_score_difference'])}"])


def forward_gnn(d: dict[str, Any], src: str) -> Iterator[Record]:
    n, lk, a = d["node"], d["link"], d["args"]
    mem = d["memory_peak_saved_bytes"]
    yield Record(src, d["date"], ("forward_gnn", "backprop_gnn"),
                 f"{a['dataset']} `{a['arch']}`, ≤ {a['epochs']} epochs per unit, seed {a['seed']}",
                 command("bench_forward_gnn", a),
                 [f"node test accuracy SF **{g(n['forward_gnn']['test_accuracy'])}** / "
                  f"BP {g(n['backprop_gnn']['test_accuracy'])}",
                  f"link ROC-AUC SF {g(lk['forward_gnn']['test_auc'])} / BP {g(lk['backprop']['test_auc'])}",
                  "peak saved bytes, depth 1→" + str(len(mem["forward_gnn"])) + ": SF "
                  + " → ".join(mib(v) for v in mem["forward_gnn"]) + "; BP "
                  + " → ".join(mib(v) for v in mem["backprop_gnn"])])


def greedy_cache(d: dict[str, Any], src: str) -> Iterator[Record]:
    arms, r = d["arms"], d["ratios_to_bp"]
    yield Record(src, d["date"], ("mono_forward", "backprop"),
                 f"MNIST `{d['args']['arch']}`, {d['args']['epochs']} epochs per unit, greedy prefix cache",
                 command("bench_greedy_cache", d["args"]),
                 [f"train time MF/BP {g(r['mf'], '×')} → {g(r['mf_cache'], '×')} with the cache",
                  f"test accuracy MF {g(arms['mf']['test_accuracy'])} / cached {g(arms['mf_cache']['test_accuracy'])}"
                  f" / BP {g(arms['bp']['test_accuracy'])}",
                  f"seconds to validation accuracy {d['args']['target']}: BP {sec(arms['bp']['seconds_to_target'])}, "
                  f"MF {sec(arms['mf']['seconds_to_target'])}, cached {sec(arms['mf_cache']['seconds_to_target'])}"])



def mono_forward(d: dict[str, Any], src: str) -> Iterator[Record]:
    mf, bp, r = d["arms"]["mono_forward"], d["arms"]["backprop"], d["ratios"]
    a = d["args"]
    yield Record(src, d["date"], ("mono_forward", "backprop"),
                 f"{a['dataset']} `{a['arch']}`, {n_of(a['epochs'], 'epoch')} per unit, batch {a['batch_size']}",
                 command("bench_mono_forward", a),
                 [f"test accuracy MF **{g(mf['test_accuracy'])}** / BP {g(bp['test_accuracy'])}",
                  f"peak saved bytes **{g(r['peak_saved_bytes_mf_over_bp'], '×')}** "
                  f"({mib(mf['peak_saved_activation_bytes'])} vs {mib(bp['peak_saved_activation_bytes'])})",
                  f"train time {g(r['train_time_mf_over_bp'], '×')}, "
                  f"per data pass {g(r['time_per_pass_mf_over_bp'], '×')}"])


def noprop(d: dict[str, Any], src: str) -> Iterator[Record]:
    m, a = d["metrics"], d["args"]
    opts = ", ".join(f"{k}={v}" for k, v in d["learner_options"].items())
    yield Record(src, d["date"], ("noprop",), f"{a['dataset']} `{a['arch']}`, {opts}, {a['epochs']} epochs",
                 command("bench_noprop", a), [f"test accuracy **{g(m['test_accuracy'])}**",
                                              f"training {sec(m['train_seconds'])}"])




def study_summary(d: dict[str, Any], src: str) -> Iterator[Record]:
    """A study's ``summary.json`` (``localearn study report``): one record per compared arm."""
    folder = src.rsplit("/", 1)[0]
    for key, e in d.items():
        if e.get("is_baseline"):
            continue
        metric = e.get("metric", "accuracy")  # a study's task metric: accuracy, roc_auc or mse
        name = {"roc_auc": "ROC-AUC", "mse": "MSE"}.get(metric, metric)
        res = [f"test {name} {g(e.get('test_metric_mean', e.get('test_accuracy_mean')))} (n = {e['n']})"]
        delta, unit = e.get("delta", e.get("delta_pp")), e.get("delta_unit", "pp")
        if delta is not None:
            lo, hi = e["delta_ci95"]
            shown = f"**{delta:+.2f} pp** [{lo:+.2f}, {hi:+.2f}]" if unit == "pp" else \
                f"**{delta:+.3g}** [{lo:+.3g}, {hi:+.3g}] ({g(e.get('test_ratio'), '×')} BP's {name})"
            better = {"arm": " (better)", "baseline": " (backprop better)"}.get(str(e.get("better")), "")
            res += [f"Δ vs {e['baseline'].split('/')[-1]} {shown}, {e['verdict']}{better}",
                    f"train time {g(e['train_seconds_ratio'], '×')}",
                    f"peak saved bytes {g(e['peak_saved_bytes_ratio'], '×')}"]
        yield Record(src, committed_date(src), (e["algo"], "studies"),
                     f"study arm {key}, `{e['arch']}`, {e['protocol']}", f"localearn study report {folder}", res)


READERS: dict[str, Callable[[dict[str, Any], str], Iterator[Record]]] = {
    "bench_counter_current": counter_current, "bench_depth": depth, "bench_distributed": distributed,
    "bench_ff_eval": ff_eval, "bench_forward_forward": rows_bench, "bench_forward_gnn": forward_gnn,
    "bench_greedy_cache": greedy_cache, "bench_kernels": kernels, "bench_mono_forward": mono_forward,
    "bench_noprop": noprop, "bench_overhead": overhead, "bench_precision": precision, "cff_analysis": cff_analysis,
}


def reader_for(d: dict[str, Any], src: str) -> Callable[[dict[str, Any], str], Iterator[Record]]:
    """The reader of ``d``'s schema; an unknown schema is an error naming the file."""
    bench = str(d.get("benchmark", ""))
    if "algorithm" in d and "metrics" in d and "status" in d:
        return run_json
    if "scores" in d and "split" in d:
        return rescored
    if d and all(isinstance(v, dict) and "test_accuracy_mean" in v and "is_baseline" in v for v in d.values()):
        return study_summary
    if "rows" in d and ("suite" in d or "bench_cafo" in bench or "bench_forward_forward" in bench):
        return rows_bench
    for name, fn in READERS.items():
        if bench == name or bench.startswith(f"python benchmarks/{name}.py"):
            return fn
    raise ValueError(f"{src}: no reader for this result's schema (benchmark {bench!r}); add one to "
                     f"docs/tools/results_readers.py")


def load_records(root: Path = ROOT) -> tuple[list[Record], list[str]]:
    """Every record under ``root/benchmarks/results`` (and study ``summary.json`` files, none yet
    committed), plus a note for each file skipped as a byte-identical copy of another."""
    seen: dict[bytes, str] = {}
    records: list[Record] = []
    skipped: list[str] = []
    for path in sorted((root / "benchmarks" / "results").rglob("*.json")):
        src = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        if raw in seen:
            skipped.append(f"`{src}` is a byte-identical copy of `{seen[raw]}` and is not shown twice")
            continue
        seen[raw] = src
        data = json.loads(raw)
        records.extend(reader_for(data, src)(data, src))
    return records, skipped
