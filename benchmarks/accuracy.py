"""Accuracy of every PH2 experiment with its shipped recipe: fit, then test the best checkpoint.

    make bench-accuracy                         # the whole table (under two hours on 2 CPU cores)
    make bench-accuracy EXP="unet_bce segnet_bce"
    .venv/bin/python benchmarks/accuracy.py --experiments unet_bce --fresh

Each experiment runs through the installed command line exactly as a user would
(``lightning-seg fit --experiment NAME``, then ``lightning-seg test --ckpt_path <best>``), so the
table measures the product, not a copy of its loop. Rows are written to
``benchmarks/results/accuracy.json`` and ``.md`` after every experiment: a stopped run resumes
where it left off (``--fresh`` starts over), and a subset refreshes only its own rows. It also
draws val IoU against wall-clock seconds for every run (``accuracy.png``). It asserts nothing.

The test split (25 % of PH2, stratified, data seed fixed) is seen once per recipe, here, after
every choice was made on the validation split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import machine  # benchmarks/common.py: scripts run from their folder

from lightning_seg.experiments import network_label
from lightning_seg.runs import loss_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

PH2_EXPERIMENTS = (
    "segnet_bce", "segnet_dice", "segnet_focal", "segnet_wsr",
    "unet_bce", "unet_upsample_bce", "unet_convpool_bce", "unet_boundary",
    "smp_unet_effl0", "smp_unet_effl2", "smp_fpn_effl2", "smp_unet_resnext50",
    "smp_unet_lite_ensemble", "smp_unet_effl2_trainval", "smp_fpn_effl2_trainval",
)  # fmt: skip

#: Val IoU of the source notebooks (40 epochs, AdamW), beside which the table puts ours.
NOTEBOOK_VAL_IOU = {
    "segnet_bce": 0.798, "segnet_dice": 0.789, "segnet_focal": 0.768, "segnet_wsr": 0.801,
    "unet_bce": 0.802, "unet_upsample_bce": 0.830, "unet_convpool_bce": 0.833,
}  # fmt: skip

ABOUT = (
    "PH2 test split (40 images, never seen by training or threshold tuning), each "
    "experiment's shipped recipe"
)

#: What an experiment does when its pretrained weights cannot be downloaded (no network).
OFFLINE_FALLBACK = {"smp_unet_resnext50": ["--model.model_args.encoder_weights=null"]}
WEIGHTS_UNAVAILABLE = "could not be downloaded"

COLUMNS = (
    ("experiment", "experiment"), ("model", "model"), ("loss", "loss"),
    ("params (M)", "params_m"), ("precision", "precision"), ("epochs", "epochs"),
    ("wall time", "wall_time"), ("val IoU", "val_iou"), ("threshold", "threshold"),
    ("test IoU", "test_iou"), ("test IoU 95 % CI", "test_iou_ci"),
    ("test IoU per image", "test_iou_per_image"),
    ("test F1", "test_f1"), ("worst image IoU", "test_iou_worst_image"),
    ("notebook val IoU", "notebook_val_iou"), ("note", "note"),
)  # fmt: skip


def lightning_seg(*args: str, log: Path) -> tuple[int, str]:
    """Run the command line as a user would; its output goes to ``log``, the last line back."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("a") as out:
        out.write(f"$ lightning-seg {' '.join(args)}\n")
        out.flush()
        code = subprocess.call(
            [sys.executable, "-m", "lightning_seg", *args], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def newest_run(runs_dir: Path, experiment: str, since: float) -> Path:
    """The fit run folder this benchmark just made (it has a summary.json)."""
    folders = [p.parent for p in (runs_dir / experiment).glob("*/summary.json")]
    folders = [p for p in folders if p.stat().st_mtime >= since]
    if not folders:
        raise RuntimeError(f"{experiment}: the fit wrote no summary.json under {runs_dir}")
    return max(folders, key=lambda p: p.stat().st_mtime)


def evaluation_result(
    runs_dir: Path, experiment: str, checkpoint: str, stage: str = "test"
) -> dict[str, Any]:
    """What ``stage`` (``test`` or ``validate``) recorded for this checkpoint
    (``<run>/evaluations/<stage>-<checkpoint>.json``)."""
    for path in sorted((runs_dir / experiment).glob(f"*/evaluations/{stage}-*.json")):
        result = json.loads(path.read_text())
        if result.get("checkpoint") == str(Path(checkpoint).resolve()):
            return result
    raise RuntimeError(f"{experiment}: no {stage} result for {checkpoint}")


def fit_experiment(
    name: str, runs_dir: Path, extra: list[str], log: Path
) -> tuple[Path, dict[str, Any], list[str], str]:
    """Fit ``name`` with its recipe as a user would, falling back to its offline flags when its
    weights cannot be downloaded: the run folder, its summary, the flags it ran with (for the
    evaluation that follows) and a note saying which fallback it took."""
    log.unlink(missing_ok=True)
    args = ["--experiment", name, f"--runs_dir={runs_dir}", *extra]
    note = ""
    start = time.time()
    code, last = lightning_seg("fit", *args, log=log)
    if code and name in OFFLINE_FALLBACK and WEIGHTS_UNAVAILABLE in log.read_text():
        args += OFFLINE_FALLBACK[name]
        note = "offline fallback: " + " ".join(OFFLINE_FALLBACK[name])
        start = time.time()
        code, last = lightning_seg("fit", *args, log=log)
    if code:
        raise RuntimeError(f"{name}: fit failed (exit {code}); see {log}: {last}")
    run = newest_run(runs_dir, name, start - 1)
    return run, json.loads((run / "summary.json").read_text()), args, note


def evaluate(
    stage: str, name: str, runs_dir: Path, args: list[str], checkpoint: str, log: Path
) -> dict[str, Any]:
    """Run ``lightning-seg test`` or ``validate`` on ``checkpoint``; what it recorded."""
    code, last = lightning_seg(stage, *args, f"--ckpt_path={checkpoint}", log=log)
    if code:
        raise RuntimeError(f"{name}: {stage} failed (exit {code}); see {log}: {last}")
    return evaluation_result(runs_dir, name, checkpoint, stage)


def run_experiment(name: str, runs_dir: Path, extra: list[str], logs: Path) -> dict[str, Any]:
    """Fit ``name`` with its recipe, test its best checkpoint, return the table row."""
    log = logs / f"{name}.log"
    run, summary, args, note = fit_experiment(name, runs_dir, extra, log)
    best = summary["best_checkpoint"]
    test = evaluate("test", name, runs_dir, args, best, log)
    config = yaml.safe_load((run / "config.yaml").read_text())
    model = config.get("model") or {}
    tta = model.get("tta", "none")
    train_splits = ((config.get("data") or {}).get("init_args") or {}).get("train_splits") or []
    if "val" in train_splits:  # a refit on train + val: its val IoU is no held-out figure
        note = "; ".join(filter(None, [note, "trained on train + val: val IoU not held out"]))
    return {
        "experiment": name,
        "model": network_label(model.get("model"), model.get("model_args")),
        "loss": loss_name(summary.get("loss")),
        "params_m": round(summary.get("num_parameters", 0) / 1e6, 2),
        "precision": str((config.get("trainer") or {}).get("precision") or "32-true"),
        "epochs": summary.get("epochs"),
        "wall_time_s": summary.get("wall_time_s"),
        "val_iou": summary.get("val/iou"),
        "threshold": summary.get("threshold", model.get("threshold")),
        "test_iou": test.get("test/iou"),
        "test_iou_ci": [test["test/iou_ci_low"], test["test/iou_ci_high"]]
        if "test/iou_ci_low" in test
        else None,
        "test_iou_per_image": test.get("test/iou_per_image"),
        "test_f1": test.get("test/f1"),
        "test_iou_worst_image": test.get("test/iou_worst_image"),
        "test_tta": tta,
        "notebook_val_iou": NOTEBOOK_VAL_IOU.get(name),
        "note": note,
        "history": [
            {"time_s": row.get("time_s"), "val/iou": row.get("val/iou")}
            for row in summary.get("history", [])
        ],
        "run_dir": str(run),
        "best_checkpoint": best,
    }


def cell(row: dict[str, Any], key: str) -> str:
    if key == "wall_time":
        seconds = row.get("wall_time_s") or 0
        return f"{seconds / 60:.1f} min"
    value = row.get(key)
    if value is None or value == "":
        return "-"
    if key == "test_iou_ci":  # bootstrap over the test images: the row's error bar
        return f"{value[0]:.3f}-{value[1]:.3f}"
    if isinstance(value, float) and key != "params_m":
        return f"{value:.2f}" if key == "threshold" else f"{value:.4f}"
    if key in ("experiment", "model", "loss"):
        return f"`{value}`"
    return str(value)


def machines(rows: list[dict[str, Any]]) -> list[str]:
    """The machines the rows were measured on, in table order, each once."""
    return list(dict.fromkeys(row["machine"] for row in rows if row.get("machine")))


def header(seen: list[str]) -> str:
    """The line above the table: what was measured and on which machine (or machines).

    A subset re-run on another machine must not relabel the rows it kept, so each row carries
    its own machine; when they differ, the header numbers them and each row's note says which.
    """
    if len(seen) <= 1:
        where = seen[0] if seen else "machine not recorded"
    else:
        where = "measured on " + "; ".join(f"[{i}] {m}" for i, m in enumerate(seen, 1))
    return f"{ABOUT}; {where}."


def note(row: dict[str, Any], seen: list[str]) -> str:
    """A row's note, with its machine's number when the table mixes machines."""
    parts = [row.get("note") or ""]
    if len(seen) > 1 and row.get("machine") in seen:
        parts.append(f"machine [{seen.index(row['machine']) + 1}]")
    return "; ".join(p for p in parts if p)


def markdown(rows: list[dict[str, Any]]) -> str:
    seen = machines(rows)
    titles = "| " + " | ".join(title for title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if k in ("experiment", "model", "loss", "note", "precision")
                          else "---:" for _, k in COLUMNS) + "|"  # fmt: skip
    lines = [header(seen), "", titles, rule]
    for row in rows:
        shown = {**row, "note": note(row, seen)}
        lines.append("| " + " | ".join(cell(shown, key) for _, key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], output: Path) -> None:
    """Val IoU against wall-clock seconds since the start of fit, one line per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    cmap = plt.get_cmap("tab20")
    for i, row in enumerate(rows):
        points = [(p["time_s"], p["val/iou"]) for p in row.get("history", [])
                  if p.get("time_s") is not None and p.get("val/iou") is not None]  # fmt: skip
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=cmap(i % 20), linewidth=1.4, label=row["experiment"])
    ax.set_xlabel("wall-clock seconds since the start of fit")
    ax.set_ylabel("val IoU (threshold 0.5)")
    ax.set_ylim(0.5, 1.0)
    ax.set_title("PH2: validation IoU against training time (2-core CPU)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, ncol=2, loc="lower right")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120, bbox_inches="tight")
    plt.close(fig)


def save(rows: list[dict[str, Any]], output: Path) -> None:
    order = {name: i for i, name in enumerate(PH2_EXPERIMENTS)}
    rows.sort(key=lambda r: order.get(r["experiment"], len(order)))
    output.mkdir(parents=True, exist_ok=True)
    (output / "accuracy.json").write_text(
        json.dumps({"machines": machines(rows), "rows": rows}, indent=1) + "\n"
    )
    (output / "accuracy.md").write_text(markdown(rows))
    plot(rows, output / "accuracy.png")


def load(path: Path) -> list[dict[str, Any]]:
    """Rows already measured; a table from before rows carried their machine gets the one
    machine its header named."""
    if not path.is_file():
        return []
    table = json.loads(path.read_text())
    rows = table["rows"]
    for row in rows:
        if not row.get("machine") and isinstance(table.get("machine"), str):
            row["machine"] = table["machine"].rsplit("; ", 1)[-1].rstrip(".")
    return rows


def pending(names: list[str], done: set[str], named: bool) -> list[str]:
    """What to run: a subset named on the command line is measured again; a plain rerun
    resumes a half-finished table, skipping the experiments it already holds."""
    return list(names) if named else [n for n in names if n not in done]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="*", default=None,
                        help="subset to (re)run (default: every PH2 experiment)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--runs_dir", type=Path, default=ROOT / "runs" / "bench-accuracy")
    parser.add_argument("--fresh", action="store_true", help="ignore rows already measured")
    parser.add_argument(
        "--args",
        default="",
        help="extra flags for fit and test, e.g. '--trainer.max_epochs=2' (rows then measure "
        "that, not the recipe)",
    )
    opts = parser.parse_args()
    names = opts.experiments or list(PH2_EXPERIMENTS)
    names = [n for chunk in names for n in chunk.split()]
    existing = opts.output / "accuracy.json"
    rows = [] if opts.fresh else load(existing)
    done = {row["experiment"] for row in rows}
    todo = pending(names, done, named=bool(opts.experiments))
    here = machine()
    print(f"bench-accuracy: {len(todo)} to run ({', '.join(todo) or 'none'}), "
          f"{len(done - set(todo))} kept from {existing}", flush=True)  # fmt: skip
    logs = opts.runs_dir / "logs"
    failed = 0
    for i, name in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name}: fit + test (log: {logs / name}.log) ...", flush=True)
        try:
            row = run_experiment(name, opts.runs_dir.resolve(), opts.args.split(), logs)
            row["machine"] = here
        except RuntimeError as error:  # one broken recipe must not cost the rest of the table
            print(f"[{i}/{len(todo)}] {name}: FAILED: {error}", flush=True)
            failed += 1
            continue
        rows = [r for r in rows if r["experiment"] != name] + [row]
        save(rows, opts.output)
        print(f"[{i}/{len(todo)}] {name}: val IoU {row['val_iou']:.4f}, test IoU "
              f"{row['test_iou']:.4f} (95 % CI {cell(row, 'test_iou_ci')}, per image "
              f"{row['test_iou_per_image']:.4f}, worst "
              f"{row['test_iou_worst_image']:.4f}), {row['epochs']} epochs in "
              f"{row['wall_time_s'] / 60:.1f} min", flush=True)  # fmt: skip
    if rows:
        save(rows, opts.output)
        print(f"table: {opts.output / 'accuracy.md'}; plot: {opts.output / 'accuracy.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
