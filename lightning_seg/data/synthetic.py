"""Procedurally generated skin-lesion-like scenes: a dataset that needs no download.

Each image holds one to three irregular blobs with soft edges on a textured skin-like background
under uneven lighting, crossed by thin dark hairs, with sensor noise. Lighting and skin tone vary
so much that no single channel threshold separates lesion from skin: a model has to use local
contrast, colour and shape, which makes it a small but real segmentation task.

Sample ``i`` of a split is drawn from ``numpy.random.default_rng([seed, split_id, i])``, so the data
is identical for a seed whatever the order, number of workers or machine.
"""

from __future__ import annotations

import cv2
import numpy as np

from lightning_seg.data.base import SegmentationDataModule
from lightning_seg.data.datasets import ArrayDataset
from lightning_seg.data.transforms import TransformSpec, build_transform
from lightning_seg.errors import ConfigurationError
from lightning_seg.preprocessing import Preprocessing

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

# Per lesion class: (RGB tint multiplied onto the skin, darkness range, texture strength).
LESION_STYLES = [
    ((0.55, 0.38, 0.30), (0.50, 0.80), 0.10),  # brown, smooth: a common nevus
    ((0.35, 0.33, 0.45), (0.35, 0.60), 0.30),  # blue-grey, blotchy: an atypical lesion
    ((0.70, 0.30, 0.25), (0.50, 0.80), 0.20),  # reddish
    ((0.30, 0.25, 0.20), (0.25, 0.50), 0.15),  # very dark
]


def smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, channels)


def lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    """A multiplicative illumination field: a tilted gradient times an off-centre vignette."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 + rng.uniform(0.3, 0.9) * (np.cos(angle) * xx + np.sin(angle) * yy)
    cx, cy = rng.uniform(-0.3, 0.3, size=2)
    vignette = 1.0 - rng.uniform(0.1, 0.5) * ((xx - cx) ** 2 + (yy - cy) ** 2) * 2
    return (gradient * vignette)[..., None]


def blob_polygon(rng: np.random.Generator, size: int) -> np.ndarray:
    """An irregular closed outline: a circle whose radius is perturbed by a few harmonics."""
    radius = rng.uniform(0.10, 0.24) * size
    centre = rng.uniform(radius, size - radius, size=2)
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.uniform(0, 0.35 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r *= radius * rng.uniform(0.7, 1.0, size=1)
    aspect = rng.uniform(0.7, 1.3)
    points = np.stack([centre[0] + r * np.cos(theta) * aspect, centre[1] + r * np.sin(theta)], 1)
    return np.round(points * 16).astype(np.int32)  # 4 fractional bits for sub-pixel outlines


def draw_hairs(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Thin dark curved lines (quadratic Bezier curves), anti-aliased, as coverage in [0, 1]."""
    canvas = np.zeros((size, size), np.float32)
    t = np.linspace(0, 1, 40)[:, None]
    for _ in range(count):
        p0, p1, p2 = rng.uniform(-0.1 * size, 1.1 * size, size=(3, 2))
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        pts = np.round(curve * 16).astype(np.int32)
        thickness = int(rng.integers(1, 3))
        cv2.polylines(canvas, [pts], False, 1.0, thickness, cv2.LINE_AA, shift=4)
    return np.clip(canvas, 0, 1)


def render_sample(
    rng: np.random.Generator, size: int, num_lesion_classes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """One image (H x W x 3 float32 in [0, 1]) and its mask (H x W uint8 class ids, 0 = skin)."""
    skin = rng.uniform([0.70, 0.50, 0.40], [0.98, 0.80, 0.70]).astype(np.float32)
    texture = 1.0 + 0.08 * smooth_noise(rng, size, 12) + 0.04 * smooth_noise(rng, size, 40)
    image = skin * texture * np.ones((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.uint8)

    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, num_lesion_classes + 1))
        tint, darkness, blotch = LESION_STYLES[(cls - 1) % len(LESION_STYLES)]
        shape = np.zeros((size, size), np.float32)
        cv2.fillPoly(shape, [blob_polygon(rng, size)], 1.0, cv2.LINE_AA, shift=4)
        mask[shape > 0.5] = cls
        # Soft edge: the lesion fades out over a few pixels beyond its outline, as real ones do.
        sigma = rng.uniform(0.8, 2.5)
        alpha = np.clip(cv2.GaussianBlur(shape, (0, 0), sigma) * 1.2, 0, 1)[..., None]
        level = rng.uniform(*darkness)
        pattern = 1.0 + blotch * smooth_noise(rng, size, int(rng.integers(6, 20)))
        colour = np.asarray(tint, np.float32) / max(tint) * skin * level * pattern
        image = image * (1 - alpha) + colour * alpha

    image *= lighting(rng, size)
    hairs = draw_hairs(rng, size, int(rng.integers(0, 7)))[..., None]
    hair_colour = rng.uniform(0.05, 0.25)
    image = image * (1 - hairs) + hair_colour * hairs
    image += rng.normal(0, rng.uniform(0.01, 0.05), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), mask


def generate(
    seed: int, split: str, count: int, size: int, num_lesion_classes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``count`` samples of a split: images N x 3 x H x W float32, masks N x H x W uint8."""
    images = np.empty((count, 3, size, size), np.float32)
    masks = np.empty((count, size, size), np.uint8)
    for i in range(count):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i])
        image, mask = render_sample(rng, size, num_lesion_classes)
        images[i] = image.transpose(2, 0, 1)
        masks[i] = mask
    return images, masks


class SyntheticDataModule(SegmentationDataModule):
    """Synthetic lesion scenes: binary (``num_lesion_classes=1``) or multiclass.

    Args:
        size: side of the square images in pixels.
        num_train, num_val, num_test: samples per split.
        num_lesion_classes: 1 gives a binary task (one logit); K > 1 gives K + 1 classes
            (background and K lesion types that differ in colour and texture).
        seed: the data's seed, independent of the training seed.
        train_transforms: Albumentations pipeline for training (none by default: every sample
            is already a fresh random scene).
    """

    def __init__(
        self,
        size: int = 128,
        num_train: int = 256,
        num_val: int = 64,
        num_test: int = 64,
        num_lesion_classes: int = 1,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        train_transforms: TransformSpec | None = None,
        weight_map: dict[str, float] | None = None,
    ) -> None:
        if size < 8:
            raise ConfigurationError(f"data.size must be >= 8 pixels, got {size}")
        if min(num_train, num_val, num_test) < 1:
            raise ConfigurationError(
                f"data.num_train, num_val and num_test must be >= 1, got "
                f"{num_train}, {num_val}, {num_test}"
            )
        if num_lesion_classes < 1:
            raise ValueError(f"num_lesion_classes must be >= 1, got {num_lesion_classes}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, weight_map=weight_map)
        binary = num_lesion_classes == 1
        self.num_classes = 1 if binary else num_lesion_classes + 1
        self.class_names = (
            ["lesion"]
            if binary
            else ["skin", *(f"lesion_{k}" for k in range(1, num_lesion_classes + 1))]
        )
        self.size = size
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.num_lesion_classes = num_lesion_classes
        self.seed = seed
        self.train_transform = build_transform(train_transforms)
        # The scenes' own statistics; a pretrained encoder replaces them with its own.
        self.preprocessing = Preprocessing(image_size=(size, size), mean=(0.5,), std=(0.25,))

    def build_dataset(self, split: str) -> ArrayDataset:
        images, masks = generate(
            self.seed, split, self.counts[split], self.size, self.num_lesion_classes
        )
        pixels = np.round(images.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        weights = np.stack([self.weight_map_of(m) for m in masks]) if self.weight_map else None
        transform = self.train_transform if split == "train" else None
        return ArrayDataset(pixels, masks, weights, transform, self.preprocessing)
