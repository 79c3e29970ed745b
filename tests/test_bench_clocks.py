"""The attention benchmark's clock sampler (benchmarks/bench_attention.py), on CPU with stub readers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_attention  # noqa: E402


def _stub(values):
    readings = iter(values)

    def read(device):
        value = next(readings, values[-1])
        if isinstance(value, Exception):
            raise value
        return value

    return read


def test_nvml_readings_give_the_median_clock_and_the_peak_temperature(monkeypatch):
    monkeypatch.setattr(bench_attention, "_nvml_sample", _stub([(1980.0, 55.0), (1755.0, 63.0), (1980.0, 58.0)]))
    with bench_attention.ClockSampler(period=0.005, device=0) as clocks:
        time.sleep(0.2)
    assert clocks.summary() == {"sm_mhz": 1980.0, "max_temp_c": 63.0}
    assert clocks.failure is None


def test_without_nvml_it_falls_back_to_nvidia_smi(monkeypatch):
    monkeypatch.setattr(bench_attention, "_nvml_sample", _stub([ModuleNotFoundError("pynvml")]))
    monkeypatch.setattr(bench_attention, "_smi_sample", _stub([(1410.0, 70.0)]))
    with bench_attention.ClockSampler(period=0.005, device=0) as clocks:
        time.sleep(0.05)  # the fallback polls every 0.5 s: one reading at most here, none is fine
        deadline = time.monotonic() + 5
        while not clocks.clocks and time.monotonic() < deadline:
            time.sleep(0.05)
    assert clocks.summary() == {"sm_mhz": 1410.0, "max_temp_c": 70.0}


def test_without_either_reader_it_reports_nothing_and_why(monkeypatch):
    monkeypatch.setattr(bench_attention, "_nvml_sample", _stub([ModuleNotFoundError("pynvml")]))
    monkeypatch.setattr(bench_attention, "_smi_sample", _stub([FileNotFoundError("nvidia-smi")]))
    with bench_attention.ClockSampler(period=0.005, device=0) as clocks:
        deadline = time.monotonic() + 5
        while clocks.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert clocks.summary() == {"sm_mhz": None, "max_temp_c": None}
    assert "nvidia-smi" in clocks.failure
    assert bench_attention._clock({"sm_mhz": None}) == "—"


@pytest.mark.parametrize("row, text", [({"sm_mhz": 1980.0, "max_temp_c": 61.0}, "1980 (61 °C)"), ({}, "—")])
def test_clock_column(row, text):
    assert bench_attention._clock(row) == text
