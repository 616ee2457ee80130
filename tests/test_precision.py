"""auto_precision: the fast precision for the hardware, recorded in the run, never over a choice."""

from __future__ import annotations

import pytest
import torch
import yaml

from lightning_seg import precision
from lightning_seg.cli import run_cli


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_cpu_runs_bf16_only_with_amx(monkeypatch, amx, expected):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    assert precision.fast_precision("cpu") == expected


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
    cli = run_cli(["fit", *tiny_fit_args, "--trainer.max_epochs=1", "--auto_precision=true"])
    assert cli.trainer.precision == "32-true" and saved_precision(tmp_path) == "32-true"


def test_an_explicit_precision_wins_over_auto(tiny_fit_args, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: False)
    flags = ["--trainer.max_epochs=1", "--auto_precision=true", "--trainer.precision=bf16-mixed"]
    cli = run_cli(["fit", *tiny_fit_args, *flags])
    assert cli.trainer.precision == "bf16-mixed" and saved_precision(tmp_path) == "bf16-mixed"
