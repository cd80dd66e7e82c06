"""Studies: fair, resumable, multi-worker comparisons of local learners with backprop.

``localearn.studies.protocol`` holds the seeding and statistics rules of docs/concepts/protocol.md#rule-4
(sampler seed from the study name, per-trial seeds, the seed-collision check, paired bootstrap
CIs, the TOST verdict, Holm). ``run_study`` (``localearn study run``) loads a TOML spec
(``localearn.studies.spec``), tunes every arm with one budget, stopping rule, pruner, objective
(the task's metric) and precision on an Optuna storage, and re-runs each arm's best configuration
on paired seeds.
"""

from localearn.studies.protocol import (
    Verdict,
    check_no_collisions,
    holm,
    paired_bootstrap_ci,
    sampler_seed,
    trial_seed,
    verdict,
)
from localearn.studies.report import load_report, write_report
from localearn.studies.runner import run_study

__all__ = ["Verdict", "check_no_collisions", "holm", "load_report", "paired_bootstrap_ci", "run_study",
           "sampler_seed", "trial_seed", "verdict", "write_report"]
