"""Runs written locally: compare them without the dashboard, and upload offline W&B runs.

A fit run folder holds ``summary.json`` (best val IoU, the other validation metrics of that
epoch, per-epoch history, parameters, wall time), ``config.yaml`` and, once its checkpoints were
tested, ``evaluations/test-<checkpoint>.json``. Both exist whether the W&B run stayed
offline or went online, so ``compare`` works on either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lightning_seg.errors import ConfigurationError
from lightning_seg.experiments import flatten, network_label
from lightning_seg.parsers import compare_parser, sync_parser


@dataclass
class Run:
    folder: Path
    summary: dict[str, Any]
    tests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.summary.get("experiment", self.folder.parent.name))

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's resolved ``config.yaml`` with dotted keys as W&B has them
        (``model.model_args.arch``, ``data.image_size``); empty when missing or unreadable."""
        try:
            import yaml

            return flatten(yaml.safe_load((self.folder / "config.yaml").read_text()) or {})
        except (OSError, ValueError, AttributeError):
            return {}

    @property
    def network(self) -> str:
        """``smp FPN tf_efficientnet_lite2``, not just ``smp``: from the summary, else from the
        run's config (runs written before summaries named it)."""
        if self.summary.get("network"):
            return str(self.summary["network"])
        model = self.summary.get("model") or self.config.get("model.model") or "?"
        if not self.config:  # without its settings an SMP default would be a guess
            return str(model)
        prefix = "model.model_args."
        args = {k.removeprefix(prefix): v for k, v in self.config.items() if k.startswith(prefix)}
        return network_label(model, args)

    @property
    def dataset(self) -> str:
        """``ph2``, ``camvid``, ...: from the summary, else from the run's config."""
        if self.summary.get("dataset"):
            return str(self.summary["dataset"])
        class_path = str(self.config.get("data.class_path", ""))
        name = class_path.rsplit(".", 1)[-1].removesuffix("DataModule").lower()
        return name or "?"


#: Settings that differ between runs without changing what was trained or how it was scored
#: (where files go, what is printed or logged), kept out of the "settings" column.
INCIDENTAL = (
    "runs_dir", "ckpt_path", "experiment", "trainer.default_root_dir", "trainer.logger",
    "trainer.callbacks", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "tracking.", "data.num_workers",
)  # fmt: skip


#: Settings the model column already names (:func:`~lightning_seg.experiments.network_label`).
IN_MODEL_COLUMN = ("model.model", "model.model_args.arch", "model.model_args.encoder_name")


def short_name(key: str) -> str:
    """``model.model_args.arch`` -> ``arch``, ``model.optimizer.init_args.lr`` ->
    ``optimizer.lr``, ``trainer.max_epochs`` -> ``max_epochs``."""
    parts = [p for p in key.split(".") if p not in ("init_args", "model_args")]
    if len(parts) > 1 and parts[0] in ("model", "data", "trainer"):
        parts = parts[1:]
    return ".".join(parts)


def setting_value(value: Any, limit: int = 32) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def differing_settings(runs: list[Run], shown: tuple[str, ...] = ()) -> dict[Path, str]:
    """For each run, the settings in which it differs from the other runs of its experiment
    (``arch=FPN seed_everything=2``): what a row of the same experiment name stands for.
    Runs alone in their experiment get none (the experiment name says it all); keys in
    ``shown`` are left out (another column of the table already names them). A key missing
    from a run's config (an option added after the run) reads ``unset``, not ``null``: the run
    never set it, which is not the same as setting it to nothing."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    settings: dict[Path, str] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        keys = sorted({key for run in group for key in run.config})
        varying = [
            key for key in keys
            if not key.startswith(INCIDENTAL) and key not in shown
            and len({json.dumps(run.config.get(key), sort_keys=True) for run in group}) > 1
        ]  # fmt: skip
        names = [short_name(key) for key in varying]
        if len(set(names)) < len(names):  # shortened names collide: keep them whole
            names = varying
        for run in group:
            settings[run.folder] = " ".join(
                f"{name}={setting_value(run.config[key]) if key in run.config else 'unset'}"
                for name, key in zip(names, varying, strict=True)
            )
    return settings


def loss_name(loss: Any) -> str:
    if isinstance(loss, list):
        return "+".join(str(term.get("name")) for term in loss)
    return str(loss)


def iou_with_interval(result: dict[str, Any], prefix: str = "test") -> str:
    """``0.9050 (95 % CI 0.8853-0.9248)``: a score on tens of images, with its error bar."""
    iou = f"{result[f'{prefix}/iou']:.4f}"
    low, high = result.get(f"{prefix}/iou_ci_low"), result.get(f"{prefix}/iou_ci_high")
    return iou if low is None or high is None else f"{iou} (95 % CI {low:.4f}-{high:.4f})"


def find_runs(targets: list[str], runs_dir: Path) -> list[Run]:
    """Fit runs named by folder or experiment name (every run of it); all runs when none given."""
    folders: list[Path] = []
    for target in targets or [str(runs_dir)]:
        path = Path(target)
        if not path.exists():
            path = runs_dir / target
        if not path.exists():
            raise ConfigurationError(
                f"no run folder or experiment named {target!r} under {runs_dir}"
            )
        found = [path] if (path / "summary.json").is_file() else sorted(
            p.parent for p in path.rglob("summary.json")
        )  # fmt: skip
        folders.extend(found)
    tests: dict[str, dict[str, Any]] = {}  # checkpoint path -> its latest test result
    files = runs_dir.rglob("evaluations/test-*.json") if runs_dir.is_dir() else []
    for test_file in sorted(files, key=lambda p: p.stat().st_mtime):
        result = json.loads(test_file.read_text())
        if result.get("checkpoint"):
            tests[str(Path(result["checkpoint"]).resolve())] = result
    runs = []
    for folder in dict.fromkeys(folders):
        summary = json.loads((folder / "summary.json").read_text())
        best = summary.get("best_checkpoint")
        best_test = tests.get(str(Path(best).resolve())) if best else None
        runs.append(Run(folder, summary, [best_test] if best_test else []))
    return runs


def table(runs: list[Run]) -> str:
    """The comparison table of the source notebooks, as Markdown, with a "settings" column
    when runs of one experiment differ in their configuration (see :func:`differing_settings`)."""
    settings = differing_settings(runs, shown=IN_MODEL_COLUMN)
    header = ("dataset", "experiment", *(("settings",) if settings else ()), "model", "loss",
              "best val IoU", "val F1", "test IoU", "epochs", "params (M)", "wall time",
              "run")  # fmt: skip
    rows = []
    for run in runs:
        s = run.summary
        # The test result of the checkpoint the run chose (its best), never the best of many.
        test_iou = next((iou_with_interval(t) for t in run.tests if "test/iou" in t), None)
        rows.append((
            run.dataset, run.name, *((settings.get(run.folder) or "-",) if settings else ()),
            run.network, loss_name(s.get("loss", "?")),
            f"{s.get('val/iou', float('nan')):.4f}",
            f"{s['val/f1']:.4f}" if "val/f1" in s else "-",
            test_iou or "-",
            str(s.get("epochs", "?")), f"{s.get('num_parameters', 0) / 1e6:.2f}",
            f"{s.get('wall_time_s', 0):.0f} s", run.folder.name,
        ))  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]  # fmt: skip
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def plot(runs: list[Run], output: Path) -> Path:
    """Val IoU (left) and val loss (right) per epoch of every run, epochs numbered as the
    checkpoints name them (``epoch=009`` is the tenth), each run's best epoch starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_iou, ax_loss) = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.get_cmap("tab20")
    settings = differing_settings(runs)
    for i, run in enumerate(runs):
        history = [row for row in run.summary.get("history", []) if "val/iou" in row]
        if not history:
            continue
        colour = colours(i % 20)
        epochs = [r["epoch"] for r in history]
        label = " ".join(
            filter(None, (f"{run.name} ({run.folder.name[-6:]})", settings.get(run.folder)))
        )
        ax_iou.plot(epochs, [r["val/iou"] for r in history], color=colour, linewidth=1.3,
                    label=label)  # fmt: skip
        best = max(history, key=lambda r: r["val/iou"])
        ax_iou.plot([best["epoch"]], [best["val/iou"]], marker="*", markersize=11, color=colour)
        losses = [(r["epoch"], r["val/loss"]) for r in history if "val/loss" in r]
        if losses:
            ax_loss.plot(*zip(*losses, strict=True), color=colour, linewidth=1.3)
    ax_iou.set(xlabel="epoch (as in checkpoint names)", ylabel="val IoU",
               title="Validation IoU (star: best epoch, the best checkpoint)")  # fmt: skip
    ax_loss.set(xlabel="epoch (as in checkpoint names)", ylabel="val loss", title="Validation loss")
    for ax in (ax_iou, ax_loss):
        ax.grid(alpha=0.3)
    if ax_iou.lines:
        fig.legend(*ax_iou.get_legend_handles_labels(), loc="lower center", fontsize=8,
                   ncol=min(4, max(1, len(runs))), frameon=False)  # fmt: skip
        fig.subplots_adjust(bottom=0.12 + 0.04 * ((len(runs) + 3) // 4))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return output


def compare_command(argv: list[str]) -> int:
    args = compare_parser().parse_args(argv)
    runs = find_runs(args.runs, args.runs_dir)
    if not runs:
        print(f"no finished fit runs under {args.runs_dir}")
        return 1
    if args.paired:
        paired = paired_line(runs)  # before any output: a refusal is the only line
    # Grouped by dataset (scores of different datasets do not compare), best run first.
    runs.sort(key=lambda r: (r.dataset, -r.summary.get("val/iou", float("-inf"))))
    print(table(runs))
    print(f"plot: {plot(runs, args.plot or args.runs_dir / 'compare.png')}")
    if args.paired:
        print(paired)
    return 0


def paired_line(runs: list[Run]) -> str:
    """The paired comparison of the tested best checkpoints of exactly two runs."""
    from lightning_seg.evaluations import compare_paired  # imports torch: only when asked

    if len(runs) != 2:
        raise ConfigurationError(
            f"compare --paired compares two runs, got {len(runs)}: name two run folders"
        )
    for run in runs:
        if not run.tests:
            raise ConfigurationError(
                f"{run.folder}: its best checkpoint has not been tested; run `lightning-seg test "
                f"--ckpt_path {run.summary.get('best_checkpoint', '<its best checkpoint>')}`"
            )
    a, b = runs
    names = [f"{run.name} ({run.folder.name[-6:]})" for run in runs]
    return compare_paired(a.tests[0], b.tests[0]).line(*names)


def offline_runs(runs_dir: Path) -> list[Path]:
    """Offline W&B runs not uploaded yet (``wandb sync`` leaves a ``.synced`` marker)."""
    pending = []
    for folder in sorted(runs_dir.rglob("offline-run-*")) if runs_dir.is_dir() else []:
        if folder.is_dir() and not list(folder.glob("*.wandb.synced")):
            pending.append(folder)
    return pending


def sync_command(argv: list[str]) -> int:
    args = sync_parser().parse_args(argv)
    pending = offline_runs(args.runs_dir)
    if not pending:
        print(f"nothing to upload: no offline W&B runs pending under {args.runs_dir}")
        return 0
    print(f"{len(pending)} offline run(s) to upload:")
    for folder in pending:
        print(f"  {folder}")
    if args.dry_run:
        return 0
    from lightning_seg.tracking import has_wandb_credentials  # imports Lightning: only now

    if not has_wandb_credentials():
        raise ConfigurationError("no W&B credentials: run `wandb login` (or set WANDB_API_KEY)")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    failed = 0
    for folder in pending:
        result = subprocess.run([sys.executable, "-m", "wandb", "sync", str(folder)], env=env)
        failed += result.returncode != 0
    return 1 if failed else 0
