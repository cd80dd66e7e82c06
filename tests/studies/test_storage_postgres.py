"""A real PostgreSQL server: two workers on one study, one SIGKILLed mid-trial (issue #11).

``.ci/run`` starts a throwaway cluster and exports ``LOCALEARN_TEST_PG_URL``; without it these
tests skip. The URL gets a password that the server (trust auth) ignores, so the tests can check
that it never reaches a file, the output or the Optuna study attributes.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import optuna
import pytest
from localearn.studies.storage import mask_url, open_storage
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from studyutil import localearn_cli, write_spec

PG = os.environ.get("LOCALEARN_TEST_PG_URL")
pytestmark = pytest.mark.skipif(PG is None, reason="LOCALEARN_TEST_PG_URL is not set (.ci/run sets it)")
SECRET = "s3cretPW-x9"


def _url() -> str:
    assert PG is not None
    return make_url(PG).set(password=SECRET).render_as_string(hide_password=False)


def _trials(url: str, prefix: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = open_storage(url, Path("."))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(prefix)}


def _wait_running(url: str, prefix: str, timeout: float = 120.0) -> int:
    """The pid of a worker with a RUNNING trial that has reported at least one data pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for trials in _trials(url, prefix).values():
                for t in trials:
                    if t.state == TrialState.RUNNING and "worker" in t.user_attrs:
                        return int(t.user_attrs["worker"].rpartition(":")[2])
        except Exception:  # the studies may not exist yet
            pass
        time.sleep(0.1)
    raise AssertionError("no trial started running")


def test_mask_url_hides_the_password() -> None:
    masked = mask_url(_url())
    assert SECRET not in str(masked) and "***" in str(masked)


def test_two_workers_one_sigkilled_mid_trial_exact_budget(tmp_path: Path) -> None:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path, name=name, trials=3, epochs=3)
    url = _url()
    common = ["study", "run", str(spec), "--storage", url, "--heartbeat", "1", "--no-progress"]
    a = localearn_cli(*common, "--tune-only", "--out", str(tmp_path / "a"))
    b = localearn_cli(*common, "--tune-only", "--out", str(tmp_path / "b"))
    victim = _wait_running(url, name)
    os.kill(victim, signal.SIGKILL)  # mid-trial: its trial stays RUNNING until the survivor repairs it
    outs = {p.pid: p.communicate(timeout=300)[0] for p in (a, b)}
    survivor = b if victim == a.pid else a
    assert survivor.returncode == 0, outs[survivor.pid]
    trials = _trials(url, name)
    assert len(trials) == 2
    for study, ts in trials.items():
        complete = [t for t in ts if t.state == TrialState.COMPLETE]
        assert len(complete) == 3, (study, [(t.number, t.state) for t in ts])
        assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1, 2]  # none lost, none duplicated
    killed = [t for ts in trials.values() for t in ts if t.state == TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["worker"].endswith(f":{victim}")
    # Its reason (issue #23): the survivor runs on the same host and sees the process gone (a worker on
    # another host is failed when its heartbeat stops: test_optuna_contract); no "experimental" noise.
    assert killed[0].user_attrs["failure"] == f"worker {killed[0].user_attrs['worker']} died mid-trial"
    assert not [o for o in outs.values() if "ExperimentalWarning" in o], outs
    retried = [t for ts in trials.values() for t in ts if t.system_attrs.get("failed_trial") is not None]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].user_attrs["slot"] == killed[0].user_attrs["slot"] and "failure" not in retried[0].user_attrs
    # The retry keeps every value the killed trial had drawn (it may have died between two draws).
    assert killed[0].params.items() <= retried[0].params.items()

    # Resume on one machine: no trial is repeated, the final runs are made, the password stays out.
    c = localearn_cli("study", "run", str(spec), "--storage", url, "--out", str(tmp_path / "a"), "--heartbeat", "1")
    out = c.communicate(timeout=300)[0]
    assert c.returncode == 0, out
    assert sum(len(ts) for ts in _trials(url, name).values()) == sum(len(ts) for ts in trials.values())
    runs = list((tmp_path / "a" / "runs").rglob("run.json"))
    assert len(runs) == 4 and all(json.loads(r.read_text())["status"] == "complete" for r in runs)
    study_json = json.loads((tmp_path / "a" / "study.json").read_text())
    assert study_json["status"] == "complete" and "***" in study_json["storage"]
    texts = [out, *outs.values()] + [p.read_text(errors="ignore") for p in tmp_path.rglob("*")
                                     if p.is_file() and p.suffix != ".pt"]
    assert not [t for t in texts if SECRET in t]
    storage = open_storage(url, Path("."))
    for s in optuna.get_all_study_summaries(storage):
        if s.study_name.startswith(name):
            study = optuna.load_study(study_name=s.study_name, storage=storage)
            assert SECRET not in json.dumps(study.user_attrs, default=str)
            assert all(SECRET not in json.dumps(t.user_attrs, default=str) for t in study.trials)
