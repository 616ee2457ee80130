"""Cross-validated test IoU of PH2 recipes: one fit per fold, each tested on its own quarter.

    make bench-crossval EXP=smp_unet_effl2          # folds 0-3: four fits, every image tested once
    .venv/bin/python benchmarks/crossval.py --experiments smp_unet_effl2 --folds 1 2

Why: the test split is 40 images, so one recipe's test IoU moves by about +-0.03 with the draw
of images (its 95 % bootstrap interval), too coarse to rank recipes a hundredth apart or to say
whether one reaches a bar such as 0.92. With ``data.init_args.fold`` (k = 4 folds for the 25 %
test split) each fold trains the shipped recipe on another half, chooses its epoch and
threshold on another quarter and tests on a third, so every one of the 160 images is a test
image exactly once. The pooled IoU over all of them (summed intersections over summed unions,
as ``test`` scores one split) has an interval about half as wide. Fold 0 is the fixed split of
``make bench-accuracy``.

Nothing is chosen here: each fold runs the recipe as shipped, and the figure estimates how well
it does on images it never saw. Each fit and test runs through the command line as a user
would (``benchmarks/accuracy.py``'s ``run_experiment``); folds are written to
``benchmarks/results/crossval.json`` and ``.md`` as they finish, so a stopped run resumes
(``--fresh`` starts over). It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accuracy import PH2_EXPERIMENTS, RESULTS, ROOT, evaluation_result, run_experiment
from common import machine  # benchmarks/: scripts run from their folder

from lightning_seg.evaluations import counts_of, worst_images
from lightning_seg.intervals import dataset_iou, iou_interval, paired_difference

#: PH2's 25 % test split cuts 160 images into 4 disjoint test quarters.
FOLDS = (0, 1, 2, 3)


def run_fold(name: str, fold: int, runs_dir: Path, extra: list[str], logs: Path) -> dict[str, Any]:
    """Fit and test ``name`` on ``fold``; the fold's scores and its per-image counts."""
    args = [f"--data.init_args.fold={fold}", *extra]
    row = run_experiment(name, runs_dir / f"fold{fold}", args, logs / f"fold{fold}")
    test = evaluation_result(runs_dir / f"fold{fold}", name, row["best_checkpoint"])
    if test.get("held_out") is False:  # the fold flag must reach test as it reached fit
        raise RuntimeError(f"{name} fold {fold}: the test images trained or chose the model")
    keep = ("val_iou", "test_iou", "test_iou_ci", "threshold", "epochs", "wall_time_s",
            "precision", "run_dir", "best_checkpoint", "note")  # fmt: skip
    return {"fold": fold, **{k: row.get(k) for k in keep}, "images": image_counts(test)}


def image_counts(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Each scored image's name, IoU and counts from an evaluation record: what pooling needs."""
    return [{k: r[k] for k in ("name", "iou", "intersection", "union")}
            for r in evaluation["images"]]  # fmt: skip


def pool(folds: list[dict[str, Any]], score: str) -> dict[str, Any]:
    """One estimate from the folds' ``score`` split (``test`` here, ``val`` in selection.py):
    the IoU over every scored image with its bootstrap interval, the folds' own IoUs (mean and
    standard deviation), the worst images and the median fit time."""
    records = [record for fold in folds for record in fold["images"]]
    inter, union = counts_of(records)
    low, high = iou_interval(inter, union)
    scores = [fold[f"{score}_iou"] for fold in folds]
    return {
        "folds": len(folds),
        "images": len(records),
        f"{score}_iou": round(float(dataset_iou(inter, union)), 6),
        f"{score}_iou_ci": [round(low, 6), round(high, 6)],
        f"fold_{score}_iou": scores,
        "fold_mean": statistics.fmean(scores),
        "fold_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        f"{score}_iou_per_image": statistics.fmean(r["iou"] for r in records),
        "worst_images": worst_images(records, 3),
        "wall_time_s_median": statistics.median(fold["wall_time_s"] for fold in folds),
    }


def pooled(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """The pooled test estimate, with the folds' mean validation IoU and their precision."""
    return {
        **pool(folds, "test"),
        "val_iou_mean": statistics.fmean(fold["val_iou"] for fold in folds),
        "precision": "/".join(sorted({str(fold["precision"]) for fold in folds})),
    }


def entry_name(name: str, label: str = "") -> str:
    """The table's name of an experiment's folds: ``smp_fpn_effl2:unfrozen`` when ``--args``
    change its recipe, so they never mix with the shipped recipe's folds."""
    return f"{name}:{label}" if label else name


def records_by_image(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for fold in entry["folds"].values() for r in fold["images"]}


def scored_entries(table: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each entry that scored any image: its per-image records by image name."""
    entries = {name: records_by_image(e) for name, e in table.get("experiments", {}).items()}
    return {name: records for name, records in entries.items() if records}


def comparisons(entries: dict[str, dict[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """Which of :func:`scored_entries` to pair, as ``(entry, reference)``: every entry against
    the leader (the highest pooled IoU among the entries that cover the most images) and every
    ``NAME:LABEL`` variant against its shipped ``NAME``. Two lines an entry at most, where all
    pairs grow with the square of the table (28 lines for eight recipes)."""
    if not entries:
        return []
    most = max(len(records) for records in entries.values())
    widest = [name for name, records in entries.items() if len(records) == most]
    leader = max(widest, key=lambda n: float(dataset_iou(*counts_of([*entries[n].values()]))))
    pairs = [(name, leader) for name in entries if name != leader]
    for name in entries:
        base = name.split(":")[0]
        if base != name and base in entries and {(name, base), (base, name)}.isdisjoint(pairs):
            pairs.append((name, base))
    return [(a, b) for a, b in pairs if set(entries[a]) == set(entries[b])]


def paired(table: dict[str, Any]) -> list[str]:
    """``a - b: +0.0123 (95 % CI ...)`` for the pairs :func:`comparisons` picks, on the images
    both were scored on: the paired bootstrap cancels what the images share, so it tells apart
    recipes whose own intervals overlap."""
    entries = scored_entries(table)
    lines = []
    for a, b in comparisons(entries):
        order = sorted(entries[a])
        counts_a = counts_of([entries[a][n] for n in order])
        counts_b = counts_of([entries[b][n] for n in order])
        difference, low, high = paired_difference(counts_a, counts_b)
        lines.append(
            f"- `{a}` - `{b}`: {difference:+.4f} (95 % CI {low:+.4f} to {high:+.4f}, "
            f"paired over {len(order)} images)"
        )
    return lines


def variant_error(names: list[str], table: dict[str, Any], args: str, label: str = "") -> str:
    """Why these flags cannot join the table ("" when they can): flags without a label would
    mix with the shipped recipe's folds, and a label whose folds ran with other flags would pool
    two recipes as one."""
    if args and not label:
        return "--args changes the recipe: name the variant with --label"
    for name in names:
        entry = table.get("experiments", {}).get(entry_name(name, label))
        if entry is not None and entry.get("args", "").split() != args.split():
            return (
                f"{entry_name(name, label)}: its recorded folds ran with "
                f"--args={entry.get('args', '')!r}, not {args!r}; name these flags with another "
                "--label (or --fresh to start the table over)"
            )
    return ""


def todo(
    names: list[str], folds: list[int], table: dict[str, Any], label: str = ""
) -> list[tuple[str, int]]:
    """The (experiment, fold) fits not yet in the table, in order: a rerun resumes."""
    done = table.get("experiments", {})
    return [
        (name, fold)
        for name in names
        for fold in folds
        if str(fold) not in done.get(entry_name(name, label), {}).get("folds", {})
    ]


def run_fits(
    fits: list[tuple[str, int]],
    table: dict[str, Any],
    args: str,
    label: str,
    run: Callable[[str, int], dict[str, Any]],
    save: Callable[[], None],
    what: str,
    done: Callable[[dict[str, Any]], str],
) -> int:
    """Run each (experiment, fold) fit, record it in ``table`` under its entry with the machine
    it ran on, and save after every one, so a stopped run resumes; how many failed."""
    here, failed = machine(), 0
    for i, (name, fold) in enumerate(fits, 1):
        shown = f"[{i}/{len(fits)}] {entry_name(name, label)} {what} {fold}"
        print(f"{shown}: fit ...", flush=True)
        try:
            result = run(name, fold)
        except RuntimeError as error:  # one broken fit must not cost the others
            print(f"{shown}: FAILED: {error}", flush=True)
            failed += 1
            continue
        result["machine"] = here
        if here not in table.setdefault("machines", []):
            table["machines"].append(here)
        entry = table.setdefault("experiments", {}).setdefault(
            entry_name(name, label), {"args": args, "folds": {}}
        )
        entry["folds"][str(fold)] = result
        save()
        print(f"{shown}: {done(result)}, {result['wall_time_s'] / 60:.1f} min", flush=True)
    return failed


def ordered_folds(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["folds"][k] for k in sorted(entry["folds"], key=int)]


def pooled_rows(table: dict[str, Any], score: str) -> list[tuple[str, dict[str, Any]]]:
    """Each pooled entry's leading table cells (name and flags, folds, the pooled ``score`` IoU
    with its interval, per fold, mean +- sd, per image, worst images) and its pooled figures,
    to which each benchmark adds its own columns."""
    rows = []
    for name, entry in table.get("experiments", {}).items():
        p = entry.get("pooled")
        if not p:
            continue
        per_fold = ", ".join(f"{f['fold']}: {f[f'{score}_iou']:.4f}" for f in ordered_folds(entry))
        shown = f"`{name}` (`{entry['args']}`)" if entry.get("args") else f"`{name}`"
        low, high = p[f"{score}_iou_ci"]
        rows.append((
            f"| {shown} | {p['folds']} ({p['images']} images) | {p[f'{score}_iou']:.4f} | "
            f"{low:.3f}-{high:.3f} | {per_fold} | {p['fold_mean']:.4f} +- {p['fold_sd']:.4f} | "
            f"{p[f'{score}_iou_per_image']:.4f} | {p['worst_images']} |",
            p,
        ))  # fmt: skip
    return rows


def paired_section(table: dict[str, Any], score: str) -> list[str]:
    differences = paired(table)
    if not differences:
        return []
    return [
        "",
        f"Paired differences of the pooled {score} IoU (same images), each recipe against the "
        "best and each variant against its shipped recipe:",
        "",
        *differences,
    ]


def write_table(
    table: dict[str, Any],
    output: Path,
    stem: str,
    pooling: Callable[[list[dict[str, Any]]], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    """Pool every entry's folds, then write ``<stem>.json`` (what a rerun resumes from) and
    ``<stem>.md``."""
    for entry in table.get("experiments", {}).values():
        folds = ordered_folds(entry)
        entry["pooled"] = pooling(folds) if folds else None
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{stem}.json").write_text(json.dumps(table, indent=1) + "\n")
    (output / f"{stem}.md").write_text(markdown(table))


def markdown(table: dict[str, Any]) -> str:
    lines = [
        "PH2, k-fold cross-validation (data.init_args.fold 0-3: each fold trains on half of the "
        "160 images, chooses epoch and threshold on a quarter, tests on the other quarter; "
        "every image is tested once); each experiment's shipped recipe, a NAME:LABEL row the "
        "variant its flags name; " + "; ".join(table.get("machines", [])) + ".",
        "",
        "| experiment | folds | test IoU, all images | 95 % CI | test IoU per fold | fold mean "
        "+- sd | per image | worst images | val IoU (mean) | wall time per fit (median) "
        "| precision |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|",
    ]
    for cells, p in pooled_rows(table, "test"):
        lines.append(
            f"{cells} {p['val_iou_mean']:.4f} | {p['wall_time_s_median'] / 60:.1f} min | "
            f"{p['precision']} |"
        )
    return "\n".join(lines + paired_section(table, "test")) + "\n"


def save(table: dict[str, Any], output: Path) -> None:
    write_table(table, output, "crossval", pooled, markdown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--experiments",
        nargs="*",
        default=None,
        help="experiments to cross-validate (default: every PH2 experiment)",
    )
    parser.add_argument(
        "--folds",
        nargs="*",
        type=int,
        default=list(FOLDS),
        help="folds to run (default 0-3, PH2's four test quarters)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--runs_dir", type=Path, default=ROOT / "runs" / "bench-crossval")
    parser.add_argument("--fresh", action="store_true", help="ignore folds already measured")
    parser.add_argument("--args", default="", help="extra flags for every fit and test")
    parser.add_argument(
        "--label", default="", help="with --args: the table names these folds NAME:LABEL"
    )
    opts = parser.parse_args()
    names = [n for chunk in opts.experiments or PH2_EXPERIMENTS for n in chunk.split()]
    path = opts.output / "crossval.json"
    table = {} if opts.fresh or not path.is_file() else json.loads(path.read_text())
    if error := variant_error(names, table, opts.args, opts.label):
        parser.error(error)
    fits = todo(names, opts.folds, table, opts.label)
    print(f"bench-crossval: {len(fits)} fit(s) to run, folds {opts.folds} of {', '.join(names)}",
          flush=True)  # fmt: skip
    failed = run_fits(
        fits, table, opts.args, opts.label,
        run=lambda name, fold: run_fold(name, fold, opts.runs_dir.resolve(), opts.args.split(),
                                        opts.runs_dir / "logs"),
        save=lambda: save(table, opts.output),
        what="fold", done=lambda r: f"val IoU {r['val_iou']:.4f}, test IoU {r['test_iou']:.4f}",
    )  # fmt: skip
    for name in names:
        entry = table.get("experiments", {}).get(entry_name(name, opts.label))
        if entry and entry.get("pooled"):
            p = entry["pooled"]
            print(f"{entry_name(name, opts.label)}: test IoU over {p['images']} images of "
                  f"{p['folds']} fold(s) "
                  f"{p['test_iou']:.4f} (95 % CI {p['test_iou_ci'][0]:.3f}-"
                  f"{p['test_iou_ci'][1]:.3f}); folds {p['fold_mean']:.4f} +- "
                  f"{p['fold_sd']:.4f}")  # fmt: skip
    if table:
        print(f"table: {opts.output / 'crossval.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
