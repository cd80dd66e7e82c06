"""``localearn study run|report|list``: the command line of the study runner.

The storage URL may also come from ``$LOCALEARN_STUDY_STORAGE``, so a password need not sit in a
shell history or a process list; it is shown masked everywhere.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import optuna
from localearn.studies.report import write_report
from localearn.studies.runner import run_study
from localearn.studies.storage import READY_ATTR, describe, open_storage, slot_counts

from localearn.errors import LocalearnError

ENV_STORAGE = "LOCALEARN_STUDY_STORAGE"


def add_study_parser(sub: Any) -> None:
    """Register ``study`` and its subcommands on the main parser's subparsers."""
    p = sub.add_parser("study", help="fair Optuna studies: tune every arm equally, compare with backprop")
    ss = p.add_subparsers(dest="study_command", required=True)
    storage_help = (f"Optuna storage: an RDB URL (postgresql+psycopg://user:pw@host/db for many workers and "
                    f"machines; sqlite:///f.db for one worker) or journal:PATH; default the journal file "
                    f"DIR/journal.log (or ${ENV_STORAGE})")
    r = ss.add_parser("run", help="tune every arm, run the best configurations on paired seeds, report")
    r.add_argument("spec", help="a study spec (TOML), e.g. studies/mf_vs_bp_digits.toml")
    r.add_argument("--storage", default=None, help=storage_help)
    r.add_argument("--workers", type=int, default=1, help="local worker processes sharing the storage (default 1)")
    r.add_argument("--out", default=None, help="study directory (default studies_out/<name>)")
    r.add_argument("--heartbeat", type=int, default=60,
                   help="seconds between a running trial's heartbeats; a trial whose beat stopped for 3x that is "
                   "retried (default 60)")
    r.add_argument("--tune-only", action="store_true",
                   help="only run tuning trials (a helper machine on a shared PostgreSQL storage)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar or summary")
    rep = ss.add_parser("report", help="write report.md, results.csv, summary.json and PNGs of a study")
    rep.add_argument("study", help="study name (studies_out/<name>) or its directory")
    rep.add_argument("--storage", default=None, help=storage_help)
    ls = ss.add_parser("list", help="list the studies in a storage")
    ls.add_argument("--storage", default=None, help=storage_help + "; default: every studies_out/*/journal.log")


def _storage(args: argparse.Namespace) -> str | None:
    return args.storage if args.storage is not None else os.environ.get(ENV_STORAGE)


def study_dir(name_or_dir: str) -> Path:
    """A study directory from a path or a name (``studies_out/<name>``)."""
    path = Path(name_or_dir)
    if (path / "study.json").is_file():
        return path
    named = Path("studies_out") / name_or_dir
    if (named / "study.json").is_file():
        return named
    raise LocalearnError(f"no study at {name_or_dir!r}: neither it nor {named} holds a study.json")


def _run(args: argparse.Namespace) -> int:
    try:
        run_study(args.spec, storage=_storage(args), workers=args.workers, out=args.out,
                  progress=not args.no_progress, heartbeat_interval=args.heartbeat, tune_only=args.tune_only)
    except KeyboardInterrupt:
        print("\ninterrupted: finished trials and final runs are kept; run the same command again to resume")
        return 130
    return 0


def _report(args: argparse.Namespace) -> int:
    path = study_dir(args.study)
    write_report(path, storage=_storage(args))
    for name in ("report.md", "results.csv", "summary.json"):
        print(path / name)
    return 0


def _list(args: argparse.Namespace) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = _storage(args)
    sources: list[tuple[str | None, Path]] = (
        [(url, Path("."))] if url is not None
        else [(None, p.parent) for p in sorted(Path("studies_out").glob("*/journal.log"))])
    if not sources:
        print("no studies: none under studies_out/ (pass --storage URL for a database)")
    for src, where in sources:
        storage = open_storage(src, where, create=False)  # listing creates no journal or database file
        print(describe(src, where))
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        for name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            counts, budget = slot_counts(study), study.user_attrs.get(READY_ATTR, "?")
            print(f"  {name:<50} {counts['complete']}/{budget} complete, {counts['pruned']} pruned, "
                  f"{counts['failed']} failed, {counts['running']} running, {counts['waiting']} waiting")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """Dispatch ``localearn study <run|report|list>``."""
    return {"run": _run, "report": _report, "list": _list}[args.study_command](args)
