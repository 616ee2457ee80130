"""auto_precision: the fast precision for the hardware, recorded in the run, never over a choice."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

from lightning_seg import precision
from lightning_seg.cli import run_cli
from lightning_seg.errors import ConfigurationError


@pytest.fixture(autouse=True)
def no_measured_speedup(monkeypatch):
    """Each test measures (or fakes) the bf16 speed-up afresh."""
    monkeypatch.delenv(precision.SPEEDUP_VARIABLE, raising=False)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "speedup", "expected"),
    [
        (True, True, 0.5, "bf16-mixed"),  # AMX: fast without measuring
        (False, True, 1.7, "bf16-mixed"),  # AVX512-BF16 that measures fast (AMD EPYC, torch 2.15)
        (False, True, 0.8, "32-true"),  # AVX512-BF16 that measures slow
        (False, False, 9.9, "32-true"),  # no bf16 instructions: never measured, never bf16
    ],
)
def test_cpu_runs_bf16_where_it_is_native_and_fast(
    monkeypatch, amx, avx512_bf16, speedup, expected
):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: avx512_bf16)
    monkeypatch.setattr(
        precision, "_step_seconds", lambda net, images, bf16: 1.0 if bf16 else speedup
    )
    assert precision.fast_precision("cpu") == expected


def test_the_speedup_is_measured_once_and_shared_with_child_processes(monkeypatch):
    calls = []
    monkeypatch.setattr(
        precision, "_step_seconds", lambda net, images, bf16: calls.append(bf16) or 1.0
    )
    assert precision.measured_bf16_speedup() == 1.0
    measured = len(calls)
    assert calls == [False, True] * (measured // 2)  # alternating: one burst cannot pick a side
    assert os.environ[precision.SPEEDUP_VARIABLE] == "1.00"  # what DDP's ranks inherit
    monkeypatch.setenv(precision.SPEEDUP_VARIABLE, "1.75")
    assert precision.measured_bf16_speedup() == 1.75 and len(calls) == measured


def test_a_burst_of_other_work_during_the_probe_does_not_flip_the_choice(monkeypatch):
    """bf16 is 1.7x as fast, but other work on the cores slows three bf16 steps fivefold (the
    warm-up included): the fastest step of each precision still says bf16."""
    slow_bf16_steps = iter([True, True, True])

    def step(net, images, bf16):
        if bf16:
            return 5.0 if next(slow_bf16_steps, False) else 1.0
        return 1.7

    monkeypatch.setattr(precision, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: True)
    monkeypatch.setattr(precision, "_step_seconds", step)
    assert precision.fast_precision("cpu") == "bf16-mixed"
    assert os.environ[precision.SPEEDUP_VARIABLE] == "1.70"


def test_the_probe_times_real_steps_and_leaves_the_seeded_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert precision.measured_bf16_speedup() > 0
    assert torch.equal(torch.rand(3), expected)


def test_a_speedup_that_is_not_a_number_fails_in_one_line(monkeypatch):
    monkeypatch.setenv(precision.SPEEDUP_VARIABLE, "fast")
    with pytest.raises(ConfigurationError, match="LIGHTNING_SEG_BF16_SPEEDUP='fast'"):
        precision.measured_bf16_speedup()


def test_gpu_without_bf16_gets_fp16_mixed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.fast_precision("auto") == "16-mixed"
    assert precision.fast_precision("cpu") in ("bf16-mixed", "32-true")  # cpu stays on the cpu


def saved_precision(tmp_path):
    (run,) = (tmp_path / "runs" / "quickstart").iterdir()
    return yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"]


def test_auto_precision_is_resolved_and_recorded(tiny_fit_args, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: False)
    cli = run_cli(["fit", *tiny_fit_args, "--trainer.max_epochs=1", "--auto_precision=true"])
    assert cli.trainer.precision == "32-true" and saved_precision(tmp_path) == "32-true"


def test_an_explicit_precision_wins_over_auto(tiny_fit_args, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: False)
    flags = ["--trainer.max_epochs=1", "--auto_precision=true", "--trainer.precision=bf16-mixed"]
    cli = run_cli(["fit", *tiny_fit_args, *flags])
    assert cli.trainer.precision == "bf16-mixed" and saved_precision(tmp_path) == "bf16-mixed"
