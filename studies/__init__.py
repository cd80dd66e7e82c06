"""Study support: the statistics and seeding rules of STUDY_PROTOCOL.md Rule 4.

``localearn.studies.protocol`` holds what every comparison needs: the sampler seed derived from
the study name (never the global seed), per-trial seeds, the seed-collision check, paired
bootstrap confidence intervals, the TOST equivalence verdict and Holm's correction.
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

__all__ = [
    "Verdict",
    "check_no_collisions",
    "holm",
    "load_report",
    "paired_bootstrap_ci",
    "sampler_seed",
    "trial_seed",
    "verdict",
    "write_report",
]
