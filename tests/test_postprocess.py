"""Largest-component post-processing: what it keeps, and that every prediction path applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_seg.errors import ConfigurationError
from lightning_seg.postprocess import largest_component, postprocess_labels
from lightning_seg.task import SegmentationTask


def blob_with_speck_and_hole() -> np.ndarray:
    mask = np.zeros((12, 12), dtype=np.int64)
    mask[2:9, 2:9] = 1  # the lesion, 49 pixels
    mask[5, 5] = 0  # a hole inside it
    mask[10:12, 10:12] = 1  # a speck elsewhere
    return mask


def test_largest_component_drops_specks_and_fills_holes():
    kept = largest_component(blob_with_speck_and_hole())
    expected = np.zeros((12, 12), dtype=np.int64)
    expected[2:9, 2:9] = 1
    np.testing.assert_array_equal(kept, expected)


def test_largest_component_keeps_an_empty_mask_empty():
    empty = np.zeros((5, 7), dtype=np.uint8)
    kept = largest_component(empty)
    assert kept.dtype == np.uint8 and not kept.any()


def test_diagonal_neighbours_are_one_region():
    diagonal = np.eye(4, dtype=np.uint8)
    np.testing.assert_array_equal(largest_component(diagonal), diagonal)


def test_postprocess_labels_works_per_image_and_keeps_dtype():
    batch = torch.from_numpy(np.stack([blob_with_speck_and_hole(), np.zeros((12, 12), np.int64)]))
    done = postprocess_labels(batch, "largest_component")
    assert done.dtype == batch.dtype and done.shape == batch.shape
    assert done[0].sum() == 49 and done[1].sum() == 0
    assert postprocess_labels(batch, "none") is batch
    with pytest.raises(ValueError, match="unknown postprocess"):
        postprocess_labels(batch, "erode")


def test_task_applies_postprocessing_to_its_labels():
    task = SegmentationTask(
        model="unet", model_args={"depth": 2, "base_channels": 4}, postprocess="largest_component"
    )
    probs = torch.from_numpy(blob_with_speck_and_hole()).float()[None, None]
    labels = task.labels_from_probabilities(probs)
    assert labels.shape == (1, 12, 12) and labels.sum() == 49
    plain = SegmentationTask(model="unet", model_args={"depth": 2, "base_channels": 4})
    assert plain.labels_from_probabilities(probs).sum() == 48 + 4


def test_postprocessing_is_refused_for_multiclass_tasks():
    with pytest.raises(ConfigurationError, match="postprocess=largest_component needs binary"):
        SegmentationTask(model="unet", num_classes=3, postprocess="largest_component")


def test_threshold_tuning_scores_the_postprocessed_labels(tiny_fit_args, tmp_path):
    from lightning_seg.cli import run_cli
    from lightning_seg.inference import load_checkpoint

    flags = ["--model.tune_threshold=true", "--model.postprocess=largest_component"]
    cli = run_cli(["fit", *tiny_fit_args, *flags])
    (tuner,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "ThresholdTuner"]
    assert tuner.threshold is not None and round(tuner.threshold * 20, 6).is_integer()
    best = load_checkpoint(cli.trainer.checkpoint_callback.best_model_path)
    assert best["hyper_parameters"]["threshold"] == tuner.threshold
    assert best["hyper_parameters"]["postprocess"] == "largest_component"
