"""``localearn study report``: report.md, results.csv, summary.json and PNG plots for a study.

Spyra & Dzwinel, *Energy-Efficient Deep Learning Without Backpropagation: A Rigorous Evaluation
of Forward-Only Algorithms*, arXiv 2511.01061 (revised), is the model: every local arm against its
same-architecture backprop arm, paired by seed, Δ accuracy in pp with a 95 % paired-bootstrap CI
and a TOST verdict, Holm-corrected, time / memory / energy as ratios with their method labels,
the epochs x cost-per-epoch decomposition and the tuning cost apart (statistics: ``summary.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localearn.studies.plots import open_history, write_plots
from localearn.studies.results import Row, collect_rows, load_study, study_objective, write_csv
from localearn.studies.summary import ALPHA, MARGIN_PP, apply_holm, arm_stats, contrast, scale_of

from localearn.errors import LocalearnError

SUMMARY_FILE = "summary.json"
DEFAULT_ROOT = Path("studies_out")
PROTOCOLS = {
    "own_convergence": "Protocol A, own convergence: every arm trains each unit until the shared stopping rule "
                       "stops it (what does the best each method can do cost?)",
    "matched_passes": "Protocol B, matched data passes: each local unit gets ceil(mean BP epochs / S) epochs, "
                      "early stopping kept with patience = budget, the BP runs reused",
}


def study_path(name_or_dir: str | Path) -> Path:
    """A study directory: the path itself when it is a folder, else ``./studies_out/<name>``."""
    path = Path(name_or_dir)
    return path if path.is_dir() else DEFAULT_ROOT / str(name_or_dir)


def build_summary(study: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """summary.json's content: one entry per arm key, contrasts for every non-baseline arm, on the
    study's metric in its direction."""
    goal = study_objective(study)
    margin = float(study.get("margin") or MARGIN_PP)
    by_key: dict[str, list[Row]] = {k: [] for k in study["arms"]}
    for row in rows:
        by_key[row.key].append(row)
    summary: dict[str, Any] = {}
    for key, arm in study["arms"].items():
        tuning = dict(arm.get("tuning") or {})
        summary[key] = {
            "dataset": arm.get("dataset"), "arm": arm.get("arm"), "algo": arm.get("algo"), "arch": arm.get("arch"),
            "options": arm.get("options") or {}, "is_baseline": bool(arm.get("is_baseline")),
            "baseline": arm.get("baseline_of"), "protocol": study.get("protocol"), "task": goal["task"],
            "higher_is_better": goal["direction"] == "maximize", "search": arm.get("search", "tpe"),
            "epochs_per_unit": (arm.get("final") or {}).get("epochs_per_unit"),
            "final_config": (arm.get("final") or {}).get("config"), "tuning": tuning,
            **arm_stats(by_key[key], goal["metric"]),
        }
    contrasts: dict[str, dict[str, Any]] = {}
    for key, entry in summary.items():
        bp = entry["baseline"]
        if entry["is_baseline"]:
            continue
        if bp not in by_key:  # no backprop arm to compare with: say so rather than invent one
            entry.update(verdict="NO_BASELINE", delta=None, delta_pp=None, delta_ci95=None, train_seconds_ratio=None,
                         peak_saved_bytes_ratio=None)
            continue
        contrasts[key] = contrast(by_key[key], by_key[bp], goal["metric"], goal["direction"] == "maximize", margin)
    apply_holm(contrasts)
    for key, c in contrasts.items():
        summary[key].update(c)
    return summary


def _fmt(v: Any, spec: str = ".3f", none: str = "–") -> str:
    return none if v is None else format(v, spec)


def _ratio(entry: dict[str, Any], name: str) -> str:
    r, ci = entry.get(f"{name}_ratio"), entry.get(f"{name}_ratio_ci95")
    return "–" if r is None else f"{r:.2f}×" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _pruner(pruner: Any) -> str:
    return str(pruner.get("policy")) if isinstance(pruner, dict) else str(pruner or "none")


def _score(e: dict[str, Any], factor: float) -> str:
    mean, sd = e["test_metric_mean"], e["test_metric_sd"]
    return "–" if mean is None else f"{factor * mean:.4g}" + (f" ± {factor * sd:.2g}" if sd is not None else "")


def _row(e: dict[str, Any], factor: float, unit: str) -> str:
    failed = f" (+{e['n_failed']} failed)" if e["n_failed"] else ""
    stops = [f"val_{e['metric']}" if m == "val_acc" else m for m in e["stop_metric"]]  # val_acc: the task's metric
    cells = [f"**{e['arm']}**" if e["is_baseline"] else e["arm"], f"{e['algo']} `{e['arch']}`", e["search"],
             f"{e['n']}{failed}", _score(e, factor), "/".join(stops) or "–"]
    if e["is_baseline"]:
        cells += ["baseline", "", "", "", ""]
    else:
        ci = e.get("delta_ci95")
        delta = "–" if e.get("delta") is None else f"{e['delta']:+.3g}{unit and ' ' + unit}" + (
            f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "")
        d = e.get("decomposition") or {}
        decomp = (f"{_fmt(d.get('epochs_ratio'), '.2f')}× epochs × {_fmt(d.get('seconds_per_epoch_ratio'), '.2f')}×"
                  " s/epoch")
        energy = _ratio(e, "energy") + (f" ({', '.join(e['energy_method'])})" if e.get("energy_ratio") else "")
        better = {"arm": " (arm better)", "baseline": " (BP better)"}.get(str(e.get("better")), "")
        cells += [delta + (f"; {_ratio(e, 'test')}" if not unit else ""), f"{e.get('verdict')}{better}",
                  f"{_ratio(e, 'train_seconds')} = {decomp}",
                  _ratio(e, "peak_saved_bytes") + (f"; CUDA {_ratio(e, 'cuda_peak')}" if e.get("cuda_peak_ratio")
                                                   else ""), energy]
    return "| " + " | ".join(cells) + " |"


def render_markdown(study: dict[str, Any], summary: dict[str, Any], plots: list[str], notes: list[str]) -> str:
    """report.md: provenance, one table per dataset, tuning cost, failed runs, plots, method notes."""
    rule = study.get("stop_rule") or {}
    goal = study_objective(study)
    metric, (factor, unit) = goal["metric"], scale_of(goal["metric"])
    shown = f"{metric}{' %' if factor == 100 else ''}"
    margin = float(study.get("margin") or MARGIN_PP)
    precisions = sorted({p for e in summary.values() for p in e.get("precision", [])})
    lines = [f"# Study `{study.get('name')}`", "",
             f"- **Objective** (every arm): task {goal['task']}, validation {metric} "
             f"({'higher' if goal['direction'] == 'maximize' else 'lower'} is better); the test {metric} is "
             "compared; **precision** "
             f"{goal['precision']} for every arm (final runs: {', '.join(precisions) or '–'})",
             f"- **Protocol:** {PROTOCOLS.get(str(study.get('protocol')), study.get('protocol'))}",
             f"- **Stopping rule** (every arm, per training unit): metric {rule.get('metric', 'auto')} (auto = each "
             f"learner's declared metric; per arm below), patience {rule.get('patience')}, min Δ "
             f"{rule.get('min_delta', 0)}, cap {rule.get('cap_epochs_per_unit')} epochs per unit, best state "
             f"restored: {rule.get('restore_best')}; pruner {_pruner(study.get('pruner'))}",
             f"- **Seeds** {study.get('seeds')} (paired by seed); Optuna {study.get('optuna_version')}, localearn "
             f"{study.get('localearn_version')}; status {study.get('status')}; storage `{study.get('storage')}`"]
    budgets = [f"{e['arm']} {e['epochs_per_unit']}" for e in summary.values() if e.get("epochs_per_unit")]
    if budgets:
        lines.append(f"- **Epochs per unit** (matched passes): {', '.join(budgets)}")
    lines.append("")
    datasets = list(dict.fromkeys(e["dataset"] for e in summary.values()))
    head = (f"| arm | learner | search | n | test {shown} | stops on | Δ {unit or metric} vs BP [95 % CI] | verdict | "
            "train time × (= epochs × cost/epoch) | saved bytes × | energy × |")
    for ds in datasets:
        lines += [f"## {ds}", "", head, "|" + "---|" * 11]
        lines += [_row(e, factor, unit) for e in summary.values() if e["dataset"] == ds]
        lines.append("")
        co2e = [f"{e['arm']} {1000 * e['co2e_kg_mean']:.3g} g" for e in summary.values()
                if e["dataset"] == ds and e["co2e_kg_mean"] is not None]
        if co2e:
            methods = sorted({m for e in summary.values() if e["dataset"] == ds for m in e["co2e_method"]})
            lines += [f"CO2e per final run (mean; {', '.join(methods)}): {', '.join(co2e)}", ""]
    lines += ["## Tuning cost (excluded from the training-cost ratios)", "",
              f"| arm | trials complete | failed | tuning seconds | best val {metric} | best params |",
              "|---|---|---|---|---|---|"]
    for key, e in summary.items():
        t = e["tuning"]
        params = ", ".join(f"{k}={_fmt(v, '.3g') if isinstance(v, float) else v}"
                           for k, v in (t.get("best_params") or {}).items())
        lines.append(f"| {key} | {t.get('trials_complete', '–')} | {t.get('trials_failed', '–')} | "
                     f"{_fmt(t.get('seconds'), '.0f')} | {_fmt(t.get('best_value'), '.4f')} | {params} |")
    failed = [(k, f) for k, e in summary.items() for f in e["failed"]]
    lines += ["", "## Failed runs (listed, never averaged in)", ""]
    lines += [f"- {k} seed {f['seed']}: {f['status']}: {f['reason']}" for k, f in failed] or ["- none"]
    lines += ["", "## Plots", ""] + [f"- [{p}]({p})" for p in plots] + [f"- {n}" for n in notes]
    lines += ["", f"Δ and ratios: arm − BP (arm / BP) over the seeds both completed, 95 % paired-bootstrap CI "
              f"(10 000 resamples, seed 0). Verdict: EQUIVALENT when the TOST 90 % CI lies inside ±{margin:g}"
              f"{unit and ' ' + unit}, DIFFERENT when the 95 % CI excludes 0 (with the better side in the metric's "
              "direction), else INCONCLUSIVE; then Holm within each metric family across "
              f"this study's contrasts (bootstrap p-values; a verdict whose adjusted p ≥ {ALPHA} becomes "
              "INCONCLUSIVE). "
              "Time is the metered warm-up + train windows only; memory is peak bytes saved for backward (CUDA "
              "peak where measured); energy is raw training joules with its method label. Full numbers: "
              "summary.json, results.csv.", ""]
    return "\n".join(lines)


def write_report(study_dir: str | Path, storage: str | None = None) -> dict[str, Any]:
    """Write report.md, results.csv, summary.json and the PNG plots into ``study_dir``; return the summary.

    Args:
        study_dir: the study directory (``study.json``, ``runs/``).
        storage: where the Optuna studies live for the optimisation-history plot: a URL or a
            journal file path; default ``DIR/journal.log`` when present.
    """
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    history = open_history(study_dir, storage)  # a storage named but unreadable: an error before any write
    rows = collect_rows(study_dir, study)
    summary = build_summary(study, rows)
    write_csv(rows, study_dir / "results.csv", study_objective(study)["metric"])
    tmp = study_dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(study_dir / SUMMARY_FILE)
    plots, notes = write_plots(study_dir, study, rows, summary, history)
    (study_dir / "report.md").write_text(render_markdown(study, summary, plots, notes))
    return summary


def load_report(name_or_dir: str | Path) -> dict[str, Any]:
    """summary.json of a study (a name resolves to ``./studies_out/<name>``)."""
    path = study_path(name_or_dir) / SUMMARY_FILE
    if not path.is_file():
        raise LocalearnError(f"no report at {path}: run `localearn study report {name_or_dir}` first")
    return json.loads(path.read_text())
