"""Choose between PH2 recipes without the test split: validation IoU over every non-test image.

    make bench-select EXP="smp_fpn_effl2"
    make bench-select EXP=smp_fpn_effl2 \\
        ARGS="--args=--model.freeze_encoder_bn=false --label=unfrozen"

Why: a recipe is chosen on the validation split, 40 PH2 images, whose IoU moves by about
+-0.03 with the draw of images, so one validation quarter can prefer a recipe that the next
quarter would not. Nested cross-validation keeps the test split (fold 0's, the one every table
reports) where it is and rotates which quarter of the other 120 images validates
(``data.init_args.val_fold`` 0-2): each fit trains on two quarters and chooses its epoch and
threshold on the third, and ``lightning-seg validate`` scores that third with the chosen
checkpoint. Pooled over the three, every non-test image is a validation image once, and two
recipes are compared image by image (a paired bootstrap) on 120 images instead of 40.

Each quarter also chose its fit's epoch and threshold, so these figures run a little high for
every recipe alike: they rank recipes, they do not estimate test IoU (``make bench-crossval``
does). Nothing here runs ``test``: the figures may choose a recipe, which is then tested once
(``make bench-accuracy``). Val fold 0 is the fit of the fixed split. Results go to
``benchmarks/results/selection.json`` and ``.md`` after every fit, so a stopped run resumes
(``--fresh`` starts over). It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from accuracy import RESULTS, ROOT, evaluate, fit_experiment
from crossval import (
    entry_name,
    image_counts,
    paired,
    paired_section,
    pool,
    pooled_rows,
    run_fits,
    todo,
    variant_error,
    write_table,
)

#: PH2's 50/25/25 split: its 120 train + val images hold three validation quarters.
VAL_FOLDS = (0, 1, 2)


def run_val_fold(
    name: str, val_fold: int, runs_dir: Path, extra: list[str], logs: Path
) -> dict[str, Any]:
    """Fit ``name`` on val fold ``val_fold``, then validate its chosen checkpoint: the fold's
    validation IoU and its per-image counts."""
    runs = runs_dir / f"val_fold{val_fold}"
    log = logs / f"val_fold{val_fold}" / f"{name}.log"
    run, summary, args, _ = fit_experiment(
        name, runs, [f"--data.init_args.val_fold={val_fold}", *extra], log
    )
    best = summary["best_checkpoint"]
    result = evaluate("validate", name, runs, args, best, log)
    if result.get("held_out") is False:  # the val fold must reach validate as it reached fit
        raise RuntimeError(f"{name} val fold {val_fold}: the validation images trained it")
    config = yaml.safe_load((run / "config.yaml").read_text())
    return {
        "fold": val_fold,
        "val_iou": result["val/iou"],
        "threshold": summary.get("threshold"),
        "epochs": summary.get("epochs"),
        "wall_time_s": summary.get("wall_time_s"),
        "precision": str((config.get("trainer") or {}).get("precision") or "32-true"),
        "run_dir": str(run),
        "best_checkpoint": best,
        "images": image_counts(result),
    }


def markdown(table: dict[str, Any]) -> str:
    lines = [
        "PH2, nested cross-validation inside fold 0 (data.init_args.val_fold 0-2: each fit "
        "trains on two quarters of the 120 non-test images and chooses its epoch and threshold "
        "on the third, which `validate` then scores; the test split is never read); each "
        "experiment's shipped recipe, a NAME:LABEL row the variant its flags name; "
        + "; ".join(table.get("machines", []))
        + ".",
        "",
        "| experiment | val folds | val IoU, all images | 95 % CI | val IoU per fold | fold mean "
        "+- sd | per image | worst images | wall time per fit (median) |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|",
    ]
    for cells, p in pooled_rows(table, "val"):
        lines.append(f"{cells} {p['wall_time_s_median'] / 60:.1f} min |")
    return "\n".join(lines + paired_section(table, "val")) + "\n"


def save(table: dict[str, Any], output: Path) -> None:
    write_table(table, output, "selection", lambda folds: pool(folds, "val"), markdown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", required=True,
                        help="experiments to compare")  # fmt: skip
    parser.add_argument("--val_folds", nargs="*", type=int, default=list(VAL_FOLDS),
                        help="val folds to run (default 0-2)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--runs_dir", type=Path, default=ROOT / "runs" / "bench-select")
    parser.add_argument("--fresh", action="store_true", help="ignore folds already measured")
    parser.add_argument("--args", default="", help="extra flags for every fit and validate")
    parser.add_argument(
        "--label", default="", help="with --args: the table names these folds NAME:LABEL"
    )
    opts = parser.parse_args()
    names = [n for chunk in opts.experiments for n in chunk.split()]
    path = opts.output / "selection.json"
    table = {} if opts.fresh or not path.is_file() else json.loads(path.read_text())
    if error := variant_error(names, table, opts.args, opts.label):
        parser.error(error)
    fits = todo(names, opts.val_folds, table, opts.label)
    print(f"bench-select: {len(fits)} fit(s) to run, val folds {opts.val_folds} of "
          f"{', '.join(names)}", flush=True)  # fmt: skip
    failed = run_fits(
        fits, table, opts.args, opts.label,
        run=lambda name, fold: run_val_fold(name, fold, opts.runs_dir.resolve(),
                                            opts.args.split(), opts.runs_dir / "logs"),
        save=lambda: save(table, opts.output),
        what="val fold", done=lambda r: f"val IoU {r['val_iou']:.4f}",
    )  # fmt: skip
    for name in names:
        entry = table.get("experiments", {}).get(entry_name(name, opts.label))
        if entry and entry.get("pooled"):
            p = entry["pooled"]
            print(f"{entry_name(name, opts.label)}: val IoU over {p['images']} images of "
                  f"{p['folds']} val fold(s) {p['val_iou']:.4f} (95 % CI "
                  f"{p['val_iou_ci'][0]:.3f}-{p['val_iou_ci'][1]:.3f})")  # fmt: skip
    for line in paired(table):
        print(line)
    if table:
        print(f"table: {opts.output / 'selection.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
