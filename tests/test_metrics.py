"""Segmentation metrics: against a NumPy reference, hand-made per-image cases, and under DDP."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_seg.metrics import build_metrics, metric_names

TESTS_DIR = Path(__file__).resolve().parent
Batches = list[tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- data and reference
def random_batches(
    seed: int,
    sizes: list[int],
    num_classes: int,
    ignore_index: int | None,
    shape: tuple[int, int] = (12, 16),
) -> Batches:
    """Noisy predictions of random masks, with the awkward cases the metrics must handle.

    Binary: the first image is empty in both prediction and truth, the second has truth but no
    prediction. Multiclass: the truth uses classes 0..C-3 only, the prediction 0..C-2, so class
    C-2 is predicted but never true and class C-1 is absent from both. With ``ignore_index``,
    about 15 % of the target pixels are ignored and the last image is ignored entirely.
    """
    rng = np.random.default_rng(seed)
    batches = []
    for n in sizes:
        if num_classes == 1:
            target = (rng.random((n, *shape)) < 0.3).astype(np.int64)
            flip = rng.random((n, *shape)) < 0.25
            preds = np.where(flip, 1 - target, target)
        else:
            target = rng.integers(0, num_classes - 2, (n, *shape))
            keep = rng.random((n, *shape)) < 0.6
            preds = np.where(keep, target, rng.integers(0, num_classes - 1, (n, *shape)))
        batches.append([preds, target])
    if num_classes == 1:
        first_preds, first_target = batches[0]
        first_preds[0], first_target[0] = 0, 0
        if len(first_preds) > 1:
            first_preds[1], first_target[1, :3] = 0, 1
    if ignore_index is not None:
        for _, target in batches:
            target[rng.random(target.shape) < 0.15] = ignore_index
        batches[-1][1][-1] = ignore_index
    return [(torch.from_numpy(p).long(), torch.from_numpy(t).long()) for p, t in batches]


def reference_scores(
    batches: Batches,
    num_classes: int,
    ignore_index: int | None,
    class_names: list[str] | None = None,
) -> dict[str, float]:
    """The documented conventions, computed from confusion counts in NumPy."""
    preds = np.concatenate([p.numpy() for p, _ in batches])
    target = np.concatenate([t.numpy() for _, t in batches])
    valid = np.ones_like(target, dtype=bool) if ignore_index is None else target != ignore_index
    if num_classes == 1:
        tp = np.sum((preds == 1) & (target == 1) & valid)
        fp = np.sum((preds == 1) & (target == 0) & valid)
        fn = np.sum((preds == 0) & (target == 1) & valid)
        per_image = []
        for image_preds, image_target, image_valid in zip(preds, target, valid, strict=True):
            if not image_valid.any():
                continue  # nothing labelled: left out of the mean
            pred_fg, true_fg = (image_preds == 1) & image_valid, image_target == 1
            union = np.sum(pred_fg | true_fg)
            per_image.append(np.sum(pred_fg & true_fg) / union if union else 1.0)
        return {
            "iou": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "iou_per_image": float(np.mean(per_image)),
            "iou_worst_image": float(np.min(per_image)),
        }
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows truth, columns pred
    np.add.at(confusion, (target[valid], preds[valid]), 1)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = tp + fp + fn > 0  # classes absent from prediction and truth have no score
    iou = np.where(present, tp / np.maximum(tp + fp + fn, 1), 0.0)
    f1 = np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    scores = {"iou": iou[present].mean(), "f1": f1[present].mean()}
    scores.update({f"iou/{name}": value for name, value in zip(names, iou, strict=True)})
    return scores


def compute(metrics: torch.nn.Module, batches: Batches) -> dict[str, float]:
    for preds, target in batches:
        metrics.update(preds, target)
    return {key: value.item() for key, value in metrics.compute().items()}


def assert_scores_equal(actual: dict[str, float], expected: dict[str, float], tol: float) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol), key


SIZES = [3, 1, 4, 2]


# ----------------------------------------------------------------------------- against NumPy
@pytest.mark.parametrize("ignore_index", [None, 255, -1])
def test_binary_matches_numpy_reference(ignore_index: int | None) -> None:
    batches = random_batches(0, SIZES, 1, ignore_index)
    actual = compute(build_metrics(1, ignore_index, ["lesion"]), batches)
    expected = reference_scores(batches, 1, ignore_index)
    assert_scores_equal(actual, expected, tol=1e-6)
    assert 0 < actual["iou"] < 1 and 0 < actual["iou_per_image"] < 1


@pytest.mark.parametrize("ignore_index", [None, 6, 255])  # 6: just past the classes 0-5
def test_multiclass_matches_numpy_reference(ignore_index: int | None) -> None:
    names = ["sky", "road", "car", "tree", "bird", "boat"]
    batches = random_batches(1, SIZES, 6, ignore_index)
    actual = compute(build_metrics(6, ignore_index, names), batches)
    expected = reference_scores(batches, 6, ignore_index, names)
    assert_scores_equal(actual, expected, tol=1e-6)
    assert actual["iou/bird"] == 0.0  # predicted, never true
    assert actual["iou/boat"] == 0.0  # absent from both: reported 0, left out of the mean


def test_absent_class_is_left_out_of_the_macro_mean() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    metrics = build_metrics(3)
    scores = compute(metrics, [(target.clone(), target)])
    assert scores["iou"] == 1.0 and scores["f1"] == 1.0  # not 2/3: class 2 never appears
    assert scores["iou/class_2"] == 0.0


def test_ignored_pixels_never_count() -> None:
    """Whatever is predicted on ignored pixels leaves every score unchanged."""
    batches = random_batches(2, [2, 3], 4, ignore_index=255)
    shuffled = [(p.clone(), t) for p, t in batches]
    for preds, target in shuffled:
        ignored = target == 255
        preds[ignored] = (preds[ignored] + 1) % 4
    assert compute(build_metrics(4, 255), batches) == compute(build_metrics(4, 255), shuffled)


# ----------------------------------------------------------------------------- per-image IoU
def image(*rows: str) -> torch.Tensor:
    """A mask from strings: ``#`` foreground, ``.`` background, ``x`` ignored (255)."""
    lookup = {"#": 1, ".": 0, "x": 255}
    return torch.tensor([[lookup[c] for c in row] for row in rows])


PER_IMAGE_CASES = {
    "perfect": (image("##..", "##.."), image("##..", "##.."), 1.0),
    "disjoint": (image("##..", "...."), image("..##", "...."), 0.0),
    "both empty": (image("....", "...."), image("....", "...."), 1.0),
    "half overlap": (image("#...", "#..."), image("##..", "##.."), 0.5),
    "missed": (image("....", "...."), image(".#..", "...."), 0.0),
}


@pytest.mark.parametrize("case", list(PER_IMAGE_CASES))
def test_per_image_iou_hand_cases(case: str) -> None:
    preds, target, expected = PER_IMAGE_CASES[case]
    scores = compute(build_metrics(1), [(preds[None], target[None])])
    assert scores["iou_per_image"] == pytest.approx(expected)


def test_per_image_iou_is_a_mean_over_images_not_pixels() -> None:
    preds = torch.stack([p for p, _, _ in PER_IMAGE_CASES.values()])
    target = torch.stack([t for _, t, _ in PER_IMAGE_CASES.values()])
    scores = compute(build_metrics(1), [(preds[:2], target[:2]), (preds[2:], target[2:])])
    assert scores["iou_per_image"] == pytest.approx(2.5 / 5)
    # Pooled over all pixels instead: intersections 4 + 2, unions 4 + 4 + 0 + 4 + 1.
    assert scores["iou"] == pytest.approx(6 / 13)


def test_worst_image_iou_is_the_lowest_image_over_batches() -> None:
    preds = torch.stack([p for p, _, _ in PER_IMAGE_CASES.values()])
    target = torch.stack([t for _, t, _ in PER_IMAGE_CASES.values()])
    # Perfect and half overlap only: the worst is 0.5, wherever it sits among the batches.
    keep = [0, 3]
    scores = compute(build_metrics(1), [(preds[keep[:1]], target[keep[:1]]),
                                        (preds[keep[1:]], target[keep[1:]])])  # fmt: skip
    assert scores["iou_worst_image"] == pytest.approx(0.5)
    scores = compute(build_metrics(1), [(preds, target)])
    assert scores["iou_worst_image"] == pytest.approx(0.0)


def test_per_image_iou_skips_ignored_pixels_and_unlabelled_images() -> None:
    preds = torch.stack([image("##..", "##.."), image("####", "####")])
    target = torch.stack([image("#xx.", "#x.."), image("xxxx", "xxxx")])
    scores = compute(build_metrics(1, ignore_index=255), [(preds, target)])
    # Image 1 counts only its labelled pixels (the predicted foreground at (0, 1) and (1, 1) is
    # ignored); image 2 has no labelled pixel and is left out rather than scored 1.0.
    assert scores["iou_per_image"] == pytest.approx(1.0)
    preds[0, 0, 3] = 1  # a false positive on a labelled pixel
    scores = compute(build_metrics(1, ignore_index=255), [(preds, target)])
    assert scores["iou_per_image"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- IoU interval
def numpy_bootstrap_interval(
    batches: Batches, num_classes: int, ignore_index: int | None, resamples: int = 1000
) -> tuple[float, float]:
    """The 95 % percentile interval of the reference IoU over images resampled with
    replacement, from NumPy's generator and image-by-image reference scores."""
    images = [(preds[i : i + 1], target[i : i + 1]) for preds, target in batches
              for i in range(len(target))]  # fmt: skip
    rng = np.random.default_rng(123)
    scores = [
        reference_scores(
            [images[i] for i in rng.integers(len(images), size=len(images))],
            num_classes,
            ignore_index,
        )["iou"]
        for _ in range(resamples)
    ]
    return float(np.quantile(scores, 0.025)), float(np.quantile(scores, 0.975))


@pytest.mark.parametrize(("num_classes", "ignore_index"), [(1, None), (1, 255), (4, 255)])
def test_iou_interval_matches_an_independent_bootstrap(
    num_classes: int, ignore_index: int | None
) -> None:
    batches = random_batches(7, [8, 8, 8, 6], num_classes, ignore_index, shape=(8, 8))
    scores = compute(build_metrics(num_classes, ignore_index, interval=True), batches)
    low, high = numpy_bootstrap_interval(batches, num_classes, ignore_index)
    width = high - low
    assert scores["iou_ci_low"] < scores["iou"] < scores["iou_ci_high"]
    assert scores["iou_ci_low"] == pytest.approx(low, abs=0.15 * width)
    assert scores["iou_ci_high"] == pytest.approx(high, abs=0.15 * width)


def test_iou_interval_is_a_point_when_every_image_scores_alike() -> None:
    preds, target = image("##..", "##.."), image("#...", "#...")
    batch = (preds.repeat(6, 1, 1), target.repeat(6, 1, 1))
    scores = compute(build_metrics(1, interval=True), [batch])
    assert scores["iou_ci_low"] == scores["iou_ci_high"] == pytest.approx(0.5)


def test_iou_interval_narrows_with_more_images_and_ignores_their_order() -> None:
    few = random_batches(8, [10], 1, None)
    many = random_batches(8, [160], 1, None)
    shuffled = [(many[0][0].flip(0), many[0][1].flip(0))]

    def interval(batches: Batches) -> tuple[float, float]:
        scores = compute(build_metrics(1, interval=True), batches)
        return scores["iou_ci_low"], scores["iou_ci_high"]

    (few_low, few_high), (low, high) = interval(few), interval(many)
    assert 0.1 < (high - low) / (few_high - few_low) < 0.5  # about 1 / sqrt(16)
    assert interval(shuffled) == (low, high)  # the same interval on any number of processes


# ----------------------------------------------------------------------------- keys and arguments
def test_keys_use_class_names_and_match_metric_names() -> None:
    names = ["road", "sky", "car"]
    batches = random_batches(3, [2], 3, None)
    scores = compute(build_metrics(3, class_names=names), batches)
    assert list(scores) == metric_names(3, names)
    assert sorted(scores) == ["f1", "iou", "iou/car", "iou/road", "iou/sky"]
    with_interval = compute(build_metrics(3, class_names=names, interval=True), batches)
    assert list(with_interval) == metric_names(3, names, interval=True)
    defaults = compute(build_metrics(3), batches)
    assert sorted(defaults) == ["f1", "iou", "iou/class_0", "iou/class_1", "iou/class_2"]
    binary = compute(build_metrics(1, class_names=["lesion"]), random_batches(3, [2], 1, None))
    assert (
        sorted(binary)
        == sorted(metric_names(1, ["lesion"]))
        == [
            "f1",
            "iou",
            "iou_per_image",
            "iou_worst_image",
        ]
    )
    binary = compute(build_metrics(1, interval=True), random_batches(3, [2], 1, None))
    assert list(binary) == metric_names(1, interval=True)
    assert {"iou_ci_low", "iou_ci_high"} <= set(binary)


def test_stage_prefix_and_reset() -> None:
    """The task clones the collection per stage and resets it every epoch."""
    names = ["road", "sky", "car"]
    val = build_metrics(3, 255, names).clone(prefix="val/")
    first, second = random_batches(4, [2, 1], 3, 255), random_batches(5, [3], 3, 255)
    expected_keys = ["val/iou", "val/f1", "val/iou/road", "val/iou/sky", "val/iou/car"]
    assert sorted(compute(val, first)) == sorted(expected_keys)
    val.reset()
    with warnings.catch_warnings():  # e.g. torchmetrics' "compute called before update"
        warnings.simplefilter("error")
        again = {k.removeprefix("val/"): v for k, v in compute(val, second).items()}
    assert_scores_equal(again, reference_scores(second, 3, 255, names), tol=1e-6)


@pytest.mark.parametrize(
    ("num_classes", "ignore_index", "class_names", "message"),
    [
        (1, 1, None, "also a class id"),
        (1, 0, None, "also a class id"),
        (11, 10, None, "also a class id"),
        (11, True, None, "int or None"),
        (3, None, ["a", "b"], "2 class names for 3 classes"),
        (3, None, ["a", "b", "a"], "unique"),
        (0, None, None, "num_classes"),
    ],
)
def test_rejects_bad_arguments(
    num_classes: int, ignore_index: int | None, class_names: list[str] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_metrics(num_classes, ignore_index, class_names)


@pytest.mark.parametrize(("num_classes", "ignore_index"), [(1, None), (4, 255), (4, None)])
def test_out_of_range_target_fails_loudly(num_classes: int, ignore_index: int | None) -> None:
    """Argument validation is off for speed; a stray label must still not pass silently."""
    preds = torch.zeros(1, 2, 2, dtype=torch.long)
    target = torch.tensor([[[0, 1], [0, 7]]])  # 7: neither a class nor ignore_index
    with pytest.raises(RuntimeError):
        build_metrics(num_classes, ignore_index).update(preds, target)


# ----------------------------------------------------------------------------- DDP
DDP_WORLD_SIZE = 2
DDP_JOIN_TIMEOUT_S = 180.0


def ddp_scenarios() -> dict[str, dict]:
    """Each scenario's batches and how they are split between the two ranks."""
    specs = {
        # name: (num_classes, ignore_index, class_names, batch sizes, batches of rank 0)
        "binary_even": (1, None, ["lesion"], [2, 3, 1, 2], 2),
        "binary_uneven_ignore": (1, 255, ["lesion"], [2, 3, 1, 2, 4], 3),
        "multiclass_even": (5, None, None, [2, 2, 3, 1], 2),
        "multiclass_uneven_ignore": (11, 11, [f"c{i}" for i in range(11)], [3, 1, 2, 2, 1], 3),
    }
    scenarios = {}
    for seed, (name, (num_classes, ignore, names, sizes, split)) in enumerate(specs.items()):
        batches = random_batches(10 + seed, sizes, num_classes, ignore)
        scenarios[name] = {
            "num_classes": num_classes,
            "ignore_index": ignore,
            "class_names": names,
            "shards": [batches[:split], batches[split:]],
        }
    return scenarios


@pytest.mark.timeout(240)
def test_ddp_matches_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gloo processes, each updating with its share, compute what one process computes
    (the bootstrap interval too: it resamples the images in an order that is not the ranks')."""
    scenarios = ddp_scenarios()
    torch.save(scenarios, tmp_path / "data.pt")
    # Spawn pickles the target by module and name: make ``ddp_worker`` importable by that name,
    # here and in the children (they receive this sys.path), whatever pytest's import mode.
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    worker = importlib.import_module("ddp_worker")

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker.run_worker, args=(rank, DDP_WORLD_SIZE, str(tmp_path)))
        for rank in range(DDP_WORLD_SIZE)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=DDP_JOIN_TIMEOUT_S)
    finally:
        hung = [p for p in processes if p.is_alive()]
        for process in hung:
            process.kill()
            process.join(timeout=10)
    errors = {p.name: p.read_text() for p in sorted(tmp_path.glob("rank*.error"))}
    assert not hung, f"DDP workers hung past {DDP_JOIN_TIMEOUT_S} s; errors: {errors}"
    assert [p.exitcode for p in processes] == [0] * DDP_WORLD_SIZE, errors

    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for name, spec in scenarios.items():
        everything = spec["shards"][0] + spec["shards"][1]
        labels = (spec["num_classes"], spec["ignore_index"], spec["class_names"])
        single = compute(build_metrics(*labels, interval=True), everything)
        for rank_results in results:  # every rank gets the synchronised values
            assert_scores_equal(rank_results[name], single, tol=1e-6)
        # Guard against a vacuous pass: one shard alone scores differently from all the data.
        alone = build_metrics(spec["num_classes"], spec["ignore_index"], spec["class_names"])
        assert compute(alone, spec["shards"][0])["iou"] != pytest.approx(single["iou"], abs=1e-6)
