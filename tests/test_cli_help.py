"""Help that helps: every command listed, the file predictor's options shown, one flag name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_seg.commands import COMMANDS, TOOLS
from lightning_seg.entry import main
from lightning_seg.parsers import PARSERS

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "models", "check-data", "compare",
                    "sync", "export", "convert-weights"):  # fmt: skip
        assert command in COMMANDS
        (line,) = [row for row in out.splitlines() if row.strip().startswith(f"{command} ")]
        assert len(line.split(None, 1)[1]) > 10
    assert "--input" in out and "quickstart" in out


def test_help_compare_and_sync_answer_without_importing_lightning_or_torch(tmp_path):
    # `import lightning` alone takes seconds: commands that do not train must not pay for it,
    # nor must any command's --help.
    code = (
        "import sys\n"
        "from lightning_seg.entry import main\n"
        "assert main(['--help']) == 0\n"
        f"assert main(['compare', '--runs_dir', {str(tmp_path)!r}]) == 1\n"
        f"assert main(['sync', '--dry-run', '--runs_dir', {str(tmp_path)!r}]) == 0\n"
        f"for command in {[*TOOLS, 'predict']!r}:\n"
        "    try:\n"
        "        main([command, '--help'])\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 0, command\n"
        "    else:\n"
        "        raise AssertionError(f'{command} --help did not exit')\n"
        "print(sorted(m for m in ('lightning', 'torch', 'albumentations') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_tool_command_has_its_parser_in_the_torch_free_module():
    assert set(PARSERS) == {*TOOLS, "predict"}


def test_no_command_prints_the_overview_and_fails(capsys):
    assert main([]) == 2
    assert "Commands:" in capsys.readouterr().out


def test_predict_help_shows_the_file_prediction_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--input", "--tta", "--overlay", "--sliding-window", "--ckpt_path"):
        assert flag in out


def test_checkpoint_flag_is_ckpt_path_everywhere_with_ckpt_as_alias(fit_checkpoint, tmp_path):
    checkpoint = fit_checkpoint(tmp_path / "runs")
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), (120, 80, 60)).save(image)
    for flag in ("--ckpt_path", "--ckpt"):
        out = tmp_path / f"out{flag}"
        assert main(["predict", flag, str(checkpoint), "--input", str(image),
                     "--output", str(out)]) == 0  # fmt: skip
        assert (out / "a.png").is_file()


def test_make_help_aligns_and_export_needs_no_output():
    help_text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
    starts = {re.match(r"\s*make \S+\s+", line).end() for line in help_text.splitlines()}
    assert len(starts) == 1, help_text
    dry = subprocess.run(["make", "-n", "export", "CKPT=model.ckpt", "STAMP="], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "--ckpt_path model.ckpt" in dry and "--output" not in dry
