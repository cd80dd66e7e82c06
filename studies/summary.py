"""Per-arm means and paired contrasts against backprop (docs/concepts/protocol.md#rule-4).

Spyra & Dzwinel, *Energy-Efficient Deep Learning Without Backpropagation: A Rigorous Evaluation
of Forward-Only Algorithms*, arXiv 2511.01061 (revised): contrasts are paired by seed with 10 000
bootstrap resamples, equivalence is a TOST inside ±0.25 pp, Holm's correction runs within each
metric family, and time / memory / energy are arm/BP ratios with their method labels.

The compared score is the study task's metric (accuracy, ROC-AUC or MSE; :mod:`localearn.tasks`),
shown scaled (:func:`scale_of`: accuracy and ROC-AUC in %, their differences in pp; MSE as is);
the equivalence margin is in those units (the spec's ``margin``, 0.25 pp by default), and a
DIFFERENT contrast says which side is ``better`` in the metric's direction (for MSE the lower).

p-values come from the same paired resamples as the CIs (seed 0, the draw of
:func:`~localearn.studies.protocol.paired_bootstrap_ci`): the difference test is the two-sided
bootstrap p, ``2 · min(P*(Δ ≤ 0), P*(Δ ≥ 0))`` (for a ratio, of r ≤ 1 and r ≥ 1); the equivalence
test is the TOST p, ``max(P*(Δ ≤ −margin), P*(Δ ≥ +margin))``. Families: accuracy difference,
accuracy equivalence, time, saved bytes, CUDA peak, energy; each is Holm-corrected across the
study's contrasts. The verdict is :func:`~localearn.studies.protocol.verdict`'s, downgraded to
INCONCLUSIVE when its Holm-adjusted p is not below 0.05 (with one contrast nothing changes).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from localearn.studies.protocol import holm, verdict
from localearn.studies.results import Row

MARGIN_PP = 0.25
ALPHA = 0.05
RESAMPLES = 10_000
#: how a metric is shown: (factor, unit of a difference); accuracy and ROC-AUC in %, MSE as is
SCALES = {"accuracy": (100.0, "pp"), "roc_auc": (100.0, "pp"), "mse": (1.0, "")}
# (summary field prefix, results row column, Holm family)
RATIOS = (
    ("test", "test", "metric"),
    ("train_seconds", "train_seconds", "time"),
    ("peak_saved_bytes", "peak_saved_activation_bytes", "saved_bytes"),
    ("cuda_peak", "cuda_peak_allocated_bytes", "cuda_peak"),
    ("peak_rss", "peak_rss_bytes", "rss"),
    ("energy", "energy_train_joules", "energy"),
    ("energy_adjusted", "energy_train_adjusted_joules", "energy_adjusted"),
)


def scale_of(metric: str) -> tuple[float, str]:
    """``(factor, unit)``: how ``metric`` is shown and its differences are named."""
    return SCALES.get(metric, (1.0, ""))


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals and len(vals) == len(values) else None


def _resamples(n: int) -> np.ndarray:
    """The paired resample indices that ``paired_bootstrap_ci(seed=0)`` draws for n pairs."""
    return np.random.default_rng(0).integers(0, n, size=(RESAMPLES, n))


def _ci(values: np.ndarray) -> list[float]:
    lo, hi = np.quantile(values, [0.025, 0.975])
    return [float(lo), float(hi)]


def mean_ci95(values: list[float]) -> list[float] | None:
    """Percentile-bootstrap 95 % CI of one arm's mean over its seeds (for plots)."""
    if len(values) < 2:
        return None
    x = np.asarray(values, dtype=float)
    return _ci(x[_resamples(len(x))].mean(axis=1))


def arm_stats(rows: list[Row], metric: str = "accuracy") -> dict[str, Any]:
    """Means over an arm's complete runs; the failed ones listed with their reasons. Scores are in
    the metric's own units (``test_metric_*``; for accuracy also under the ``test_accuracy_*`` keys)."""
    ok = [r for r in rows if r.ok]
    col = {c: [r.value(c) for r in ok] for c in (
        "test", "val", "epochs", "data_passes", "train_seconds", "peak_saved_activation_bytes", "peak_rss_bytes",
        "cuda_peak_allocated_bytes", "energy_train_joules", "energy_train_adjusted_joules", "co2e_kg")}
    score = [float(a) for a in col["test"]]
    passes, seconds, joules = (_mean(col[c]) for c in ("data_passes", "train_seconds", "energy_train_joules"))
    epochs = _mean(col["epochs"])
    scores = {"test_metric_mean": _mean(score), "test_metric_sd": statistics.stdev(score) if len(score) > 1 else None,
              "test_metric_ci95": mean_ci95(score), "val_metric_mean": _mean(col["val"])}
    legacy = {k.replace("metric", "accuracy"): (v if metric == "accuracy" else None) for k, v in scores.items()}
    return {
        "n": len(ok), "n_failed": len(rows) - len(ok), "seeds": [r.seed for r in ok], "metric": metric, **scores,
        **legacy, "precision": sorted({str(r.value("precision")) for r in ok}),
        "epochs_mean": epochs, "data_passes_mean": passes, "train_seconds_mean": seconds,
        "seconds_per_epoch": seconds / epochs if seconds is not None and epochs else None,
        "seconds_per_pass": seconds / passes if seconds is not None and passes else None,
        "peak_saved_bytes_mean": _mean(col["peak_saved_activation_bytes"]),
        "peak_rss_bytes_mean": _mean(col["peak_rss_bytes"]),
        "cuda_peak_mean": _mean(col["cuda_peak_allocated_bytes"]),
        "energy_method": sorted({str(r.value("energy_method")) for r in ok}) if ok else [],
        "energy_joules_mean": joules, "energy_adjusted_joules_mean": _mean(col["energy_train_adjusted_joules"]),
        "joules_per_pass": joules / passes if joules is not None and passes else None,
        "co2e_kg_mean": _mean(col["co2e_kg"]),
        "co2e_method": sorted({str(r.value("co2e_method")) for r in ok}) if ok else [],
        "stop_metric": sorted({str(r.value("stop_metric")) for r in ok}),
        "failed": [{"seed": r.seed, "status": r.status, "reason": r.failure} for r in rows if not r.ok],
    }


def _ratio(a: list[Any], b: list[Any]) -> dict[str, Any] | None:
    """arm/BP ratio of paired means, its 95 % CI and the two-sided bootstrap p (H0: ratio 1)."""
    if any(v is None for v in (*a, *b)) or not a:
        return None
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if y.mean() <= 0:
        return None
    out: dict[str, Any] = {"ratio": float(x.mean() / y.mean()), "ci95": None, "p": None}
    if len(x) >= 2:
        idx = _resamples(len(x))
        den = y[idx].mean(axis=1)
        r = np.divide(x[idx].mean(axis=1), den, out=np.full(len(den), np.inf), where=den > 0)
        out["ci95"] = _ci(r)
        out["p"] = float(min(1.0, 2 * min((r <= 1).mean(), (r >= 1).mean())))
    return out


def contrast(arm_rows: list[Row], bp_rows: list[Row], metric: str = "accuracy", higher_is_better: bool = True,
             margin: float = MARGIN_PP) -> dict[str, Any]:
    """The paired contrast of one arm with its backprop arm, over the seeds both completed: the
    difference of the test metric (arm − BP, in :func:`scale_of` units), its verdict, the ratios."""
    factor, unit = scale_of(metric)
    ok_a = {r.seed: r for r in arm_rows if r.ok}
    ok_b = {r.seed: r for r in bp_rows if r.ok}
    seeds = [s for s in ok_a if s in ok_b]
    a, b = [ok_a[s] for s in seeds], [ok_b[s] for s in seeds]
    out: dict[str, Any] = {"n_paired": len(seeds), "paired_seeds": seeds, "delta_unit": unit, "margin": margin}
    score_a = [factor * float(r.value("test")) for r in a]
    score_b = [factor * float(r.value("test")) for r in b]
    if len(seeds) >= 2:
        v = verdict(score_a, score_b, margin=margin)
        diff = (np.asarray(score_a) - np.asarray(score_b))[_resamples(len(seeds))].mean(axis=1)
        out.update(delta=v.mean, delta_ci95=list(v.ci95), delta_ci90=list(v.ci90), verdict_uncorrected=v.label,
                   p_diff=float(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean()))),
                   p_equiv=float(max((diff <= -margin).mean(), (diff >= margin).mean())))
    else:
        out.update(delta=statistics.fmean(score_a) - statistics.fmean(score_b) if seeds else None,
                   delta_ci95=None, delta_ci90=None, verdict_uncorrected="INSUFFICIENT_PAIRS", p_diff=None,
                   p_equiv=None)
    out["delta_pp"] = out["delta"] if unit == "pp" else None
    out["higher_is_better"] = higher_is_better
    for name, column, _ in RATIOS:
        r = _ratio([x.value(column) for x in a], [x.value(column) for x in b])
        out[f"{name}_ratio"] = r["ratio"] if r else None
        out[f"{name}_ratio_ci95"] = r["ci95"] if r else None
        out[f"{name}_p"] = r["p"] if r else None
    methods = {str(x.value("energy_method")) for x in a + b}
    if len(methods) != 1:  # never divide joules measured two different ways
        for name in ("energy", "energy_adjusted"):
            out[f"{name}_ratio"] = out[f"{name}_ratio_ci95"] = out[f"{name}_p"] = None
    out["energy_method"] = sorted(methods)
    out["decomposition"] = decomposition(a, b)
    return out


def decomposition(a: list[Row], b: list[Row]) -> dict[str, Any]:
    """Over the paired runs: time ratio = epochs ratio x cost-per-epoch ratio (exactly, as ratios of
    means); the same with data passes, and joules per pass where energy was measured."""
    def mean(rows: list[Row], column: str) -> float | None:
        return _mean([r.value(column) for r in rows]) if rows else None

    def per(rows: list[Row], num: str, den: str) -> float | None:
        x, y = mean(rows, num), mean(rows, den)
        return x / y if x is not None and y else None

    def ratio(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y else None

    return {"epochs_ratio": ratio(mean(a, "epochs"), mean(b, "epochs")),
            "seconds_per_epoch_ratio": ratio(per(a, "train_seconds", "epochs"), per(b, "train_seconds", "epochs")),
            "data_passes_ratio": ratio(mean(a, "data_passes"), mean(b, "data_passes")),
            "seconds_per_pass_ratio": ratio(per(a, "train_seconds", "data_passes"),
                                            per(b, "train_seconds", "data_passes")),
            "joules_per_pass_ratio": ratio(per(a, "energy_train_joules", "data_passes"),
                                           per(b, "energy_train_joules", "data_passes"))}


def apply_holm(contrasts: dict[str, dict[str, Any]]) -> None:
    """Holm-adjust every family across the contrasts in place; set the corrected verdict."""
    families = [("p_diff", "p_diff_holm"), ("p_equiv", "p_equiv_holm")]
    families += [(f"{name}_p", f"{name}_p_holm") for name, _, _ in RATIOS]
    for raw, adj in families:
        keys = [k for k, c in contrasts.items() if c.get(raw) is not None]
        for k, p in zip(keys, holm([contrasts[k][raw] for k in keys]) if keys else [], strict=True):
            contrasts[k][adj] = p
        for c in contrasts.values():
            c.setdefault(adj, None)
    m = sum(1 for c in contrasts.values() if c.get("p_diff") is not None)
    for c in contrasts.values():
        label = c["verdict_uncorrected"]
        if m > 1 and label == "EQUIVALENT" and c["p_equiv_holm"] >= ALPHA:
            label = "INCONCLUSIVE"
        if m > 1 and label == "DIFFERENT" and c["p_diff_holm"] >= ALPHA:
            label = "INCONCLUSIVE"
        c["verdict"] = label
        c["holm_family_size"] = m
        up = (c["delta"] or 0) > 0
        c["better"] = ("arm" if up == c["higher_is_better"] else "baseline") if label == "DIFFERENT" else None
