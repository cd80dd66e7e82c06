"""PNG plots of a study report (matplotlib, Agg, imported when a plot is drawn: a heavy optional part).

accuracy_vs_cost.png: the mean test metric (accuracy, ROC-AUC or MSE: the study task's) against
mean training energy (time where energy is not measured), 95 % bootstrap CI bars per arm;
memory.png: peak bytes saved for backward per arm (and the CUDA peak where measured) and per
layer; learning_curves.png: the validation metric against data passes from each run's history;
optimization_history_<dataset>.png: Optuna's own plot of every arm's tuning trials, read from the
study's storage.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.results import Row, study_objective
from localearn.studies.storage import open_storage
from localearn.studies.summary import mean_ci95, scale_of
from localearn.studies.urls import check_url, scrub
from optuna.storages.journal import JournalFileBackend

from localearn.errors import ConfigError

MIB = 2**20


def _mpl() -> Any:
    """matplotlib's Figure, style and MaxNLocator, on the Agg backend unless a notebook chose one."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib import style
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    return Figure, style, MaxNLocator


def _datasets(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(e["dataset"] for e in summary.values()))


def _complete(rows: list[Row], key: str) -> list[Row]:
    return [r for r in rows if r.key == key and r.ok]


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def accuracy_vs_cost(summary: dict[str, Any], rows: list[Row], path: Path, metric: str = "accuracy") -> str:
    """One panel per dataset: the test metric (y) against training energy or time (x), CI bars both ways."""
    Figure, _, _ = _mpl()
    factor, _ = scale_of(metric)
    datasets = _datasets(summary)
    fig = Figure(figsize=(5.5 * len(datasets), 4.2))
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        keys = [k for k, e in summary.items() if e["dataset"] == ds and e["n"]]
        methods = {m for k in keys for m in summary[k]["energy_method"]}
        energy = bool(keys) and all(summary[k]["energy_joules_mean"] is not None for k in keys) and len(methods) == 1
        column = "energy_train_joules" if energy else "train_seconds"
        for k in keys:
            e, ok = summary[k], _complete(rows, k)
            xs, ys = [float(r.value(column)) for r in ok], [factor * float(r.value("test")) for r in ok]
            x, y = sum(xs) / len(xs), sum(ys) / len(ys)
            xci, yci = mean_ci95(xs), mean_ci95(ys)
            ax.errorbar(x, y, xerr=[[x - xci[0]], [xci[1] - x]] if xci else None,
                        yerr=[[y - yci[0]], [yci[1] - y]] if yci else None, fmt="s" if e["is_baseline"] else "o",
                        capsize=4, markersize=7, label=f"{e['arm']} (n={e['n']})")
        label = f"training energy, J ({next(iter(methods))})" if energy else "training time, s (warm-up + train)"
        ax.set(xlabel=label, ylabel=f"test {metric}{', %' if factor == 100 else ''} (mean, 95 % CI)", title=ds)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def memory(summary: dict[str, Any], rows: list[Row], path: Path) -> str:
    """Left: peak saved-for-backward MiB per arm (+ CUDA peak); right: per layer, first complete run."""
    Figure, _, _ = _mpl()
    keys = [k for k, e in summary.items() if e["n"]]
    colour = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    layers = []
    for k in keys:
        run = _complete(rows, k)[0].run
        for name, entry in (run.per_layer if run is not None else {}).items():
            mib = (entry.peak_saved_activation_bytes or 0) / MIB
            layers.append((f"{k}: {name}", mib, colour[k]))
    fig = Figure(figsize=(12, max(3.5, 0.3 * len(layers) + 1.2)))
    ax = fig.add_subplot(1, 2, 1)
    cuda = any(summary[k]["cuda_peak_mean"] for k in keys)
    width = 0.4 if cuda else 0.7
    pos = list(range(len(keys)))
    ax.bar([p - (width / 2 if cuda else 0) for p in pos], [(summary[k]["peak_saved_bytes_mean"] or 0) / MIB
                                                           for k in keys], width, label="saved for backward",
           color=[colour[k] for k in keys])
    if cuda:
        ax.bar([p + width / 2 for p in pos], [(summary[k]["cuda_peak_mean"] or 0) / MIB for k in keys], width,
               label="CUDA max allocated (hatched)", color=[colour[k] for k in keys], hatch="//", alpha=0.6)
    ax.set_xticks(pos, keys, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="peak MiB (mean over seeds)", title="peak memory per arm")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)  # room for the legend above the bars
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.barh(range(len(layers)), [m for _, m, _ in layers], color=[c for _, _, c in layers])
    ax2.set_yticks(range(len(layers)), [n for n, _, _ in layers], fontsize=7)
    ax2.invert_yaxis()
    ax2.set(xlabel="peak MiB saved for backward", title="per layer (above its train_step entry)")
    return _save(fig, path)


def learning_curves(summary: dict[str, Any], rows: list[Row], path: Path, metric: str = "accuracy") -> str:
    """The validation metric against cumulative data passes, mean over seeds with a min–max band."""
    Figure, _, MaxNLocator = _mpl()
    factor, _ = scale_of(metric)
    datasets = _datasets(summary)
    fig = Figure(figsize=(5.5 * len(datasets), 4.2))
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        for k, e in summary.items():
            if e["dataset"] != ds or not e["n"]:
                continue
            curves: dict[int, list[float]] = {}
            for r in _complete(rows, k):
                for h in r.run.history if r.run is not None else ():
                    if h.global_epoch is not None and h.val_metric is not None:
                        curves.setdefault(h.global_epoch, []).append(factor * h.val_metric)
            xs = sorted(curves)
            line = ax.plot(xs, [sum(curves[x]) / len(curves[x]) for x in xs], marker=".", label=e["arm"],
                           linestyle="--" if e["is_baseline"] else "-")
            ax.fill_between(xs, [min(curves[x]) for x in xs], [max(curves[x]) for x in xs],
                            color=line[0].get_color(), alpha=0.15)
        ax.set(xlabel="data passes (summed over units; a greedy learner restarts at each unit)",
               ylabel=f"validation {metric}{', %' if factor == 100 else ''} (unit's scores)", title=ds)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def open_history(study_dir: Path, storage: Any) -> Any:
    """The storage of the tuning trials: an RDB URL, a journal file path (``journal:`` prefix
    optional), None (``DIR/journal.log`` if there is one, else None) or a storage already open.
    A storage the user named that cannot be read is one clear error (``ConfigError``)."""
    if storage is None:
        path = study_dir / "journal.log"
        if not path.is_file():
            return None
    elif not isinstance(storage, str):
        return storage
    elif check_url(storage) or "://" in storage:
        return open_storage(storage, study_dir, create=False)
    else:
        path = Path(storage.removeprefix("journal:"))
        if not path.is_file():
            raise ConfigError(f"journal file {path} does not exist")
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def optimization_history(study: dict[str, Any], storage: Any, study_dir: Path) -> tuple[list[str], list[str]]:
    """Optuna's ``plot_optimization_history`` over every arm's study, one PNG per dataset."""
    _, _, MaxNLocator = _mpl()
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    metric = study_objective(study)["metric"]
    files: list[str] = []
    notes: list[str] = []
    by_ds: dict[str, list[optuna.Study]] = {}
    for key, arm in study["arms"].items():
        try:
            s = optuna.load_study(study_name=arm["optuna_study"], storage=storage)
        except KeyError:
            notes.append(f"{key}: no Optuna study {arm.get('optuna_study')!r} in the storage")
            continue
        if s.trials:
            by_ds.setdefault(str(arm.get("dataset")), []).append(s)
    for ds, studies in by_ds.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is "experimental" in Optuna
            ax = plot_optimization_history(studies, target_name=f"validation {metric}")
        fig = ax.get_figure(root=True)
        assert fig is not None
        fig.set_size_inches(8, 4.5)
        ax.set_title(f"Optuna optimisation history: {ds}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        name = f"optimization_history_{ds}.png"
        fig.tight_layout()
        fig.savefig(study_dir / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files, notes


def write_plots(study_dir: Path, study: dict[str, Any], rows: list[Row], summary: dict[str, Any],
                storage: Any) -> tuple[list[str], list[str]]:
    """Every plot that has data; returns the PNG names and notes on what could not be drawn."""
    # Optuna's matplotlib module switches the global style to ggplot when imported: draw every
    # plot in matplotlib's default style and leave the caller's rcParams as they were.
    _, style, _ = _mpl()
    with style.context("default"):
        return _write_plots(study_dir, study, rows, summary, storage)


def _write_plots(study_dir: Path, study: dict[str, Any], rows: list[Row], summary: dict[str, Any],
                 storage: Any) -> tuple[list[str], list[str]]:
    files: list[str] = []
    notes: list[str] = []
    metric = study_objective(study)["metric"]
    if any(e["n"] for e in summary.values()):
        files.append(accuracy_vs_cost(summary, rows, study_dir / "accuracy_vs_cost.png", metric))
        files.append(memory(summary, rows, study_dir / "memory.png"))
        files.append(learning_curves(summary, rows, study_dir / "learning_curves.png", metric))
    else:
        notes.append("no complete final run yet: no accuracy, memory or learning-curve plot")
    for stale in study_dir.glob("optimization_history_*.png"):  # a report never shows an old plot
        stale.unlink()
    try:
        handle = open_history(study_dir, storage)
        if handle is None:
            notes.append("optimisation history not drawn: no journal.log in the study directory and no --storage")
        else:
            more, missing = optimization_history(study, handle, study_dir)
            files += more
            notes += missing
    except Exception as exc:  # a report without the tuning plot beats no report; say why
        why = scrub(str(exc))  # never print a password
        notes.append(f"optimisation history not drawn: cannot read the storage ({type(exc).__name__}: {why})")
    return files, notes
