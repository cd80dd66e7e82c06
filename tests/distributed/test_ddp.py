"""Data parallelism: 2 ranks x B/2 rows equal 1 rank x B rows, and the ranks never drift (issue #13).

Each layer's gradient is averaged across ranks between its own backward and its own step
(``LocalLayer.grad_sync``), so per-layer stepping cannot leave the replicas apart, as one DDP
wrapper around a whole local network would (docs/guides/distributed.md#ddp-per-layer).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from distutil import max_gap, model, run_json, single, torchrun

from localearn.distributed import summed_energy

COMMON = ("--dataset", "digits", "--epochs", "2", "--batch-size", "64")


@pytest.mark.parametrize(("algo", "extra"), [
    ("mono_forward", ("--arch", "mlp:3x64", "--schedule", "joint")),
    ("backprop", ("--arch", "mlp:2x64",)),
])
def test_two_ranks_half_batches_match_one_rank(tmp_path: Path, algo: str, extra: tuple[str, ...]) -> None:
    one = single(tmp_path / "one", "--algo", algo, *COMMON, *extra)
    assert one.returncode == 0, one.stderr
    metered = ("--energy",) if algo == "mono_forward" else ()  # each rank meters its own device
    two = torchrun(tmp_path / "two", "--algo", algo, *COMMON, *extra, "--parallel", "ddp", *metered)
    assert two.returncode == 0, two.stdout + two.stderr
    r0, r1 = model(tmp_path / "two" / "rank0"), model(tmp_path / "two" / "rank1")
    assert max_gap(r0, r1) == 0.0  # the replicas are identical, not merely close
    assert max_gap(model(tmp_path / "one"), r0) < 1e-4  # float summation order only
    a, b = run_json(tmp_path / "one"), run_json(tmp_path / "two")
    assert abs(a["metrics"]["test_accuracy"] - b["metrics"]["test_accuracy"]) <= 1 / 360  # at most 1 test image
    dist = b["distributed"]
    assert dist["mode"] == "ddp" and [r["batch_share"] for r in dist["ranks"]] == [0.5, 0.5]
    assert all(r["bytes_sent"] > 0 for r in dist["ranks"])
    if metered:  # every rank's own energy headline (measured, or the reason it could not be)
        assert all(r["energy"]["method"] and ("train_joules" in r["energy"] or r["energy"]["reason"])
                   for r in dist["ranks"])
        assert dist["train_joules_all_ranks"] == summed_energy(dist["ranks"])


def test_rank_energies_add_up_only_when_each_rank_meters_its_own_gpu() -> None:
    gpu = [{"energy": {"method": "nvml_energy_counter", "train_joules": j}} for j in (10.0, 32.5)]
    assert summed_energy(gpu) == 42.5
    cpu = [{"energy": {"method": "rapl", "train_joules": 10.0}}] * 2  # one package read twice
    assert summed_energy(cpu) is None
    assert summed_energy([gpu[0], {"energy": None}]) is None


def test_closed_form_cafo_predictors_refuse_ddp(tmp_path: Path) -> None:
    res = torchrun(tmp_path / "c", "--algo", "cafo", "--opt", "predictor_loss=mse", "--epochs", "1",
                   "--parallel", "ddp", nproc=1)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("error:")]
    assert res.returncode != 0 and lines and "predictor_loss=mse" in lines[0], res.stdout + res.stderr
