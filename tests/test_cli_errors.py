"""Bad input is one clear line naming the setting or file, with exit status 2."""

from __future__ import annotations

import logging
import pickle

import pytest

from tests.cli_helpers import exit_status


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("flag", "names"),
    [
        ("--data.init_args.batch_size=0", "batch_size"),
        ("--data.init_args.size=0", "size"),
    ],
)
def test_non_positive_sizes_are_one_line(tiny_fit_args, capsys, flag, names):
    assert exit_status(["fit", *tiny_fit_args, flag]) == 2
    assert names in one_line_error(capsys)


def test_an_encoder_learning_rate_scale_for_a_network_without_one_fails_before_any_run(
    tiny_fit_args, tmp_path, capsys
):
    assert exit_status(["fit", *tiny_fit_args, "--model.encoder_lr_scale=0.1"]) == 2
    assert "encoder_lr_scale=0.1 needs a network with an encoder" in one_line_error(capsys)
    assert not list(tmp_path.rglob("config.yaml"))  # no run folder was begun


def test_a_model_argument_the_network_does_not_take_fails_in_one_line_before_any_run(
    tiny_fit_args, tmp_path, capsys
):
    # The quickstart's U-Net arguments (depth, base_channels) mean nothing to SegNet.
    assert exit_status(["fit", *tiny_fit_args, "--model.model=segnet"]) == 2
    line = one_line_error(capsys)
    assert "model_args for model 'segnet'" in line and "'depth'" in line
    assert not list(tmp_path.rglob("config.yaml"))


def test_non_positive_image_size_is_one_line(tmp_path, capsys):
    from lightning_seg.data import PH2DataModule
    from lightning_seg.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="image_size"):
        PH2DataModule(root=str(tmp_path), image_size=0)


@pytest.mark.parametrize("command", ["fit", "check-data"])
def test_experiment_yaml_syntax_error_names_file_and_line(tmp_path, monkeypatch, capsys, command):
    (tmp_path / "broken.yaml").write_text("trainer:\n  max_epochs: 2\n model: [unclosed\n")
    monkeypatch.setenv("LIGHTNING_SEG_EXPERIMENTS", str(tmp_path))
    assert exit_status([command, "--experiment", "broken"]) == 2
    err = one_line_error(capsys)
    assert "broken.yaml:3" in err and "YAML" in err


class Exploit:
    def __reduce__(self):
        return (print, ("ran code from a checkpoint",))


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
@pytest.mark.parametrize("kind", ["malicious", "truncated", "text"])
def test_bad_checkpoint_files_are_one_line(tiny_fit_args, tmp_path, capsys, command, kind):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "malicious":
        path.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    elif kind == "truncated":
        path.write_bytes(b"PK\x03\x04 not the rest of a checkpoint")
    else:
        path.write_text("not a checkpoint at all\n")
    assert exit_status([command, *tiny_fit_args, f"--ckpt_path={path}"]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and "ran code" not in capsys.readouterr().out


def test_ph2_without_diagnoses_warns_that_the_split_is_not_stratified(tmp_path, caplog):
    import zipfile

    from lightning_seg.data import PH2DataModule
    from tests.data.test_check_and_download import make_ph2_zip

    make_ph2_zip(tmp_path / "ph2.zip")
    with zipfile.ZipFile(tmp_path / "ph2.zip") as archive:
        archive.extractall(tmp_path / "ph2")
    (tmp_path / "ph2" / "PH2Dataset" / "PH2_dataset.txt").unlink()
    with caplog.at_level(logging.WARNING):
        PH2DataModule(root=str(tmp_path / "ph2"), cache=False).splits()
    assert "not stratified" in caplog.text and "PH2_dataset.txt" in caplog.text


def test_half_built_caches_of_killed_runs_are_removed_by_the_next_build(tmp_path):
    import os
    import subprocess
    import sys

    import numpy as np

    from lightning_seg.data import cache

    folder = tmp_path / "ph2-train-abc"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    abandoned = tmp_path / f".{folder.name}.{dead}.x1"
    running = tmp_path / f".{folder.name}.{os.getpid()}.x2"  # a live build: left alone
    for partial in (abandoned, running):
        partial.mkdir()
        (partial / "images.npy").write_bytes(b"half")
    sample = (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "a")
    cache.build(folder, 1, (4, 4, 3), iter([sample]), {})
    assert not abandoned.exists() and running.exists() and (folder / "meta.json").is_file()
