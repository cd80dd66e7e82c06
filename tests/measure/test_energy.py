"""Energy metering: RAPL reader, NVML counter and attribution, idle adjustment, CPU-only runs, CO2e."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import localearn
from localearn.errors import ConfigError
from localearn.measure import PhaseMeter
from localearn.measure.carbon import METHOD, CarbonTracker, resolve_country
from localearn.measure.energy import EnergyProbe
from localearn.measure.gpu import foreign_pids, own_memory
from localearn.measure.rapl import RaplReader, counter_delta, discover_zones

MAX_RANGE = 262_143_328_850  # a real package max_energy_range_uj


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def make_rapl(root: Path, package_uj: int = 1_000, dram_uj: int = 500) -> Path:
    """A powercap tree in the real sysfs layout: package-0 with core and dram subzones."""
    zones = {
        "intel-rapl:0": ("package-0", package_uj),
        "intel-rapl:0:0": ("core", 7),
        "intel-rapl:0:1": ("dram", dram_uj),
    }
    for zone, (name, uj) in zones.items():
        d = root / zone
        d.mkdir(parents=True)
        _write(d / "name", name)
        _write(d / "energy_uj", str(uj))
        _write(d / "max_energy_range_uj", str(MAX_RANGE))
    (root / "intel-rapl").mkdir()  # the control-type directory has no counter
    return root


# ----------------------------------------------------------------------------------- RAPL
def test_counter_delta_handles_wraparound() -> None:
    assert counter_delta(100, 350, 1000) == 250
    assert counter_delta(900, 50, 1000) == 150  # 100 to the wrap, 50 after it


def test_rapl_reader_sums_package_and_dram_across_a_wrap(tmp_path: Path) -> None:
    root = make_rapl(tmp_path, package_uj=MAX_RANGE - 1_000, dram_uj=500)
    reader = RaplReader(root)
    assert sorted(z.name for z in reader.zones) == ["dram", "package-0"]  # core is inside package
    _write(root / "intel-rapl:0" / "energy_uj", "2500")  # wrapped: 1000 + 2500 uJ
    _write(root / "intel-rapl:0:1" / "energy_uj", "3500")  # +3000 uJ
    _write(root / "intel-rapl:0:0" / "energy_uj", "999999")  # core: must not be added
    by_domain = {zone.name: uj for zone, uj in reader.totals_uj().items()}
    assert by_domain == {"package-0": 3_500, "dram": 3_000}


def test_rapl_reasons_name_the_problem(tmp_path: Path) -> None:
    zones, reason = discover_zones(tmp_path / "missing")
    assert zones == [] and "no powercap directory" in str(reason) and "missing" in str(reason)
    (tmp_path / "empty").mkdir()
    zones, reason = discover_zones(tmp_path / "empty")
    assert zones == [] and "no intel-rapl zones" in str(reason)


def test_probe_measures_rapl_per_phase_and_unit(tmp_path: Path) -> None:
    root = make_rapl(tmp_path / "powercap")
    probe = EnergyProbe(device="cpu", idle_seconds=0, rapl_root=root)
    meter = PhaseMeter(None, [probe])
    meter.unit = "layer0"
    with meter.phase("train"):
        _write(root / "intel-rapl:0" / "energy_uj", str(1_000 + 2_000_000))
        _write(root / "intel-rapl:0:1" / "energy_uj", str(500 + 500_000))
    meter.unit = None
    with meter.phase("test"):
        _write(root / "intel-rapl:0" / "energy_uj", str(1_000 + 3_000_000))
    energy = probe.report()["energy"]
    assert energy["method"] == "rapl"
    assert energy["train_joules"] == pytest.approx(2.5)
    assert energy["total_joules"] == pytest.approx(3.5)
    assert energy["cpu"]["per_domain_joules"] == pytest.approx({"package": 3.0, "dram": 0.5})
    assert list(energy["cpu"]["per_unit"]) == ["layer0"]  # test is outside every unit
    assert energy["cpu"]["per_unit"]["layer0"]["training"]["joules"] == pytest.approx(2.5)
    assert energy["cpu"]["per_phase"]["train"]["short_windows"] == 1


def test_with_a_country_codecarbon_is_the_only_cpu_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_rapl(tmp_path / "powercap")
    probe = EnergyProbe(device="cpu", idle_seconds=0, country="DEU", rapl_root=root)
    assert probe.carbon is not None
    monkeypatch.setattr(probe.carbon, "start", lambda: None)
    monkeypatch.setattr(probe.carbon, "stop", lambda: {"status": "estimated", "cpu_energy_kwh": 1e-6})
    meter = PhaseMeter(None, [probe])
    with meter.phase("train"):
        _write(root / "intel-rapl:0" / "energy_uj", str(1_000 + 2_000_000))
    energy = probe.report()["energy"]
    assert probe.rapl is None  # the project's RAPL reader never opened
    assert energy["cpu"]["method"] == "not_measured" and "CodeCarbon reads the CPU" in energy["cpu"]["reason"]
    assert energy["co2e"]["cpu_energy_kwh"] == 1e-6


# ------------------------------------------------------------------------------ fake GPU
class FakeGpu:
    """The GPU reader's surface for one board whose power the test sets; the counter integrates it."""

    def __init__(self, watts: float = 50.0, counter: bool = True, pids: list[int] | None = None,
                 mig: bool = False) -> None:
        self._w, self._acc, self._t = watts, 0.0, time.perf_counter()
        self.counter, self.mig = counter, mig
        self.pids = [os.getpid()] if pids is None else pids
        self.closed = False

    def set_power(self, watts: float) -> None:
        now = time.perf_counter()
        self._acc += self._w * (now - self._t)
        self._t, self._w = now, watts

    def energy_mj(self) -> int | None:
        return int(1000 * (self._acc + self._w * (time.perf_counter() - self._t))) if self.counter else None

    def power_w(self) -> float:
        return self._w

    def temperature(self) -> float:
        return 41.0

    def utilization(self) -> float:
        return 90.0

    def sm_clock(self) -> float:
        return 1980.0

    def processes(self) -> list[tuple[int, int | None]]:
        return [(p, 512 * 2**20) for p in self.pids]

    def info(self) -> dict[str, Any]:
        return {"name": "Fake H100", "power_limit_w": 700.0, "cuda_driver_version": "12.4",
                "mig_enabled": self.mig}

    def close(self) -> None:
        self.closed = True


def _fake_run(fake: FakeGpu, tmp_path: Path, window_s: float = 0.3) -> dict[str, Any]:
    probe = EnergyProbe(device="cuda", idle_seconds=0.3, gpu=fake, rapl_root=tmp_path / "no-powercap")
    meter = PhaseMeter(None, [probe])  # device None: no CUDA synchronise on this machine
    probe.begin()  # idle baseline at the fake's 50 W
    fake.set_power(250.0)
    meter.unit = "layer0"
    with meter.phase("train"):
        time.sleep(window_s)
    return probe.report()


def test_nvml_counter_gives_raw_and_adjusted_energy(tmp_path: Path) -> None:
    fake = FakeGpu()
    report = _fake_run(fake, tmp_path)
    energy, gpu = report["energy"], report["energy"]["gpu"]
    assert energy["method"] == "nvml_energy_counter"
    assert energy["baseline"]["gpu_idle_w"] == pytest.approx(50, rel=0.02)
    train = gpu["per_phase"]["train"]
    assert train["joules"] / train["seconds"] == pytest.approx(250, rel=0.02)
    assert train["adjusted_joules"] / train["seconds"] == pytest.approx(200, rel=0.03)
    assert train["adjusted_joules"] == pytest.approx(train["joules"] - gpu["idle_w"] * train["seconds"])
    assert train["mean_power_w"] == pytest.approx(250, rel=0.02) and train["peak_power_w"] == 250
    assert train["mean_utilization_pct"] == 90 and train["mean_sm_clock_mhz"] == 1980
    assert train["short_windows"] == 1  # 0.3 s < 5 s: flagged
    assert gpu["per_unit"]["layer0"]["training"]["joules"] == pytest.approx(energy["train_joules"])
    assert gpu["device"]["name"] == "Fake H100" and gpu["device"]["temperature_c_start"] == 41
    assert report["gpu_memory"]["nvml_process_peak_bytes"] == 512 * 2**20
    assert fake.closed


def test_gpu_without_counter_is_not_measured(tmp_path: Path) -> None:
    energy = _fake_run(FakeGpu(counter=False), tmp_path, window_s=0.05)["energy"]
    assert energy["method"] == "not_measured" and "no energy counter" in energy["reason"]
    assert energy["train_joules"] is None and energy["baseline"]["status"] == "not_measured"
    assert energy["gpu"]["device"]["name"] == "Fake H100"  # the board is still described


def test_attribution_reads_pid_namespaces() -> None:
    me = os.getpid()
    assert foreign_pids([(me, 1), (4242, 2)]) == {4242}
    assert foreign_pids([(4242, 7)]) == set()  # our PID hidden by a namespace: the one process is us
    assert foreign_pids([(4242, 7), (4343, 8)]) == {4242, 4343}
    assert own_memory([(4242, 7)]) == 7 and own_memory([(me, 5), (4242, 9)]) == 5


@pytest.mark.parametrize(
    "fake, why",
    [
        (FakeGpu(pids=[os.getpid(), 4242]), "other processes"),
        (FakeGpu(mig=True), "MIG"),
    ],
)
def test_shared_gpu_or_mig_cannot_be_attributed(tmp_path: Path, fake: FakeGpu, why: str) -> None:
    energy = _fake_run(fake, tmp_path, window_s=0.05)["energy"]
    assert energy["method"] == "cannot_attribute" and why in energy["reason"]
    assert energy["train_joules"] is None and "per_phase" not in energy["gpu"]


# --------------------------------------------------------------------------------- CO2e
def test_country_codes_are_validated() -> None:
    assert resolve_country("pol") == "POL"
    assert resolve_country("PL") == "POL"  # alpha-2 converted
    with pytest.raises(ConfigError, match="explicit country"):
        resolve_country(None)
    with pytest.raises(ConfigError, match="no energy-mix data for country 'ZZZ'"):
        resolve_country("ZZZ")
    with pytest.raises(ConfigError, match="alpha-2 country code 'QQ'"):
        resolve_country("QQ")
    with pytest.raises(ConfigError, match="ZZZ"):
        EnergyProbe(country="ZZZ")  # fails before any training


def test_codecarbon_failure_is_surfaced(monkeypatch: pytest.MonkeyPatch) -> None:
    import codecarbon

    class Broken:
        def __init__(self, **kw: Any) -> None: ...
        def start(self) -> None:
            logging.getLogger("codecarbon").error("cannot read the CPU power")

        def stop(self) -> None:  # CodeCarbon's @suppress turns exceptions into None
            return None

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Broken)
    tracker = CarbonTracker("DEU")
    tracker.start()
    out = tracker.stop()
    assert out["status"] == "failed" and out["kg_co2e"] is None
    assert "cannot read the CPU power" in out["reason"]


# ------------------------------------------------------------------ a real CPU-only run
def test_cpu_run_reports_not_measured_and_co2e_estimate(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    probe = EnergyProbe(country="POL", rapl_root=tmp_path / "no-powercap")
    localearn.fit(
        "mono_forward",
        "digits",
        arch="mlp:1x32",
        epochs=1,
        progress=False,
        device="cpu",
        probes=[probe],
        out=tmp_path / "run",
        seed=0,
    )
    metrics = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    energy = metrics["energy"]
    assert energy["method"] == "not_measured"
    assert "no powercap directory" in energy["reason"] and "no GPU" in energy["reason"]
    assert energy["train_joules"] is None and energy["total_joules"] is None  # nothing invented
    assert energy["gpu"]["reason"] == "the run used the CPU, not a GPU"
    assert energy["baseline"]["status"] == "not_measured"  # no 10 s wait with nothing to meter
    co2e = energy["co2e"]
    assert co2e["method"] == METHOD == "codecarbon_offline (estimated)"
    assert co2e["status"] == "estimated" and co2e["country_iso_code"] == "POL"
    assert co2e["kg_co2e"] > 0 and co2e["energy_kwh"] > 0
    assert not list(tmp_path.glob("**/emissions.csv"))  # CodeCarbon wrote no files
    assert metrics["gpu_memory"]["method"] == "not_measured"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_measures_energy_with_the_counter(tmp_path: Path) -> None:
    probe = EnergyProbe(idle_seconds=2)
    result = localearn.fit(
        "mono_forward",
        "digits",
        arch="mlp:2x256",
        epochs=2,
        progress=False,
        device="cuda",
        probes=[probe],
        out=tmp_path / "run",
        seed=0,
    )
    energy = result["metrics"]["energy"]
    if energy["method"] == "cannot_attribute":
        pytest.skip(f"shared GPU: {energy['reason']}")
    assert energy["method"] in ("nvml_energy_counter", "not_measured")
    if energy["method"] == "not_measured":
        pytest.skip(f"no counter: {energy['reason']}")
    assert energy["train_joules"] > 0
    assert energy["gpu"]["device"]["name"]
    assert (
        result["metrics"]["gpu_memory"]["nvml_process_peak_bytes"] is None
        or result["metrics"]["gpu_memory"]["nvml_process_peak_bytes"] > 0
    )
