"""The datamodules on the real datasets in ../shared/data (or $LIGHTNING_SEG_DATA); skipped with
the reason when they are absent, as on a user's fresh clone."""

from __future__ import annotations

from collections import Counter

import numpy as np

from lightning_seg.data import (
    CamVidDataModule,
    FolderDataModule,
    PH2DataModule,
    SandstoneDataModule,
)
from lightning_seg.data.ph2 import read_diagnoses


def test_ph2_png_pairs_and_stratified_seeded_split(real_data):
    dm = PH2DataModule(root=str(real_data / "ph2"), num_workers=0)
    splits = dm.splits()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [80, 40, 40]
    assert all(p.image.suffix == ".png" and p.mask.name.endswith("_lesion.png")
               for p in splits["train"])  # fmt: skip
    mix = {name: Counter(p.label for p in pairs) for name, pairs in splits.items()}
    total = mix["train"] + mix["val"] + mix["test"]
    for label, count in total.items():  # every split holds each diagnosis in proportion
        assert abs(mix["train"][label] - count / 2) <= 1
        assert abs(mix["val"][label] - count / 4) <= 1
    assert splits == PH2DataModule(root=str(real_data / "ph2")).splits()
    assert splits != PH2DataModule(root=str(real_data / "ph2"), seed=1).splits()


def test_ph2_diagnoses_are_read(real_data):
    diagnoses = read_diagnoses(real_data / "ph2" / "PH2Dataset" / "PH2_dataset.txt")
    assert len(diagnoses) >= 160 and set(diagnoses.values()) == {"0", "1", "2"}


def test_ph2_bmp_with_one_bit_and_rgb_masks(real_data):
    dm = PH2DataModule(root=str(real_data / "ph2_bmp"), image_size=128, num_workers=0)
    pairs = [p for part in dm.splits().values() for p in part]
    assert len(pairs) == 4 and all(p.image.suffix == ".bmp" for p in pairs)
    for pair in pairs:  # IMD002's mask is RGB 0/255, the others 1-bit
        image, mask, _ = dm.decode_pair(pair)
        assert image.shape[2] == 3 and set(np.unique(mask)) == {0, 1}
        assert 0.02 < mask.mean() < 0.98
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (3, 128, 128)


def test_sandstone_rgb_and_grey_masks_tiled(real_data):
    dm = SandstoneDataModule(root=str(real_data / "sandstone"), num_workers=0)
    pairs = [p for part in dm.splits().values() for p in part]
    assert len(pairs) == 10  # 9 RGB-coded slices and the grey-coded one
    fractions = []
    for pair in pairs:
        image, mask, report = dm.decode_pair(pair)
        assert image.shape[2] == 1 and set(np.unique(mask)) <= {0, 1, 2, 3}
        assert report.far == 0
        fractions.append(np.bincount(mask.ravel(), minlength=4) / mask.size)
    mean = np.mean(fractions, axis=0)  # about 48 / 46 / 4 / 2 %
    assert mean[:2].min() > 0.3 and mean[2:].max() < 0.1
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16 * len(dm.splits()["train"])  # 4 x 4 tiles a slice
    assert next(iter(dm.train_dataloader()))["image"].shape[1:] == (1, 256, 256)


def test_camvid_splits_void_and_class_weights(real_data):
    dm = CamVidDataModule(root=str(real_data / "camvid"), image_size=(96, 128), num_workers=0)
    counts = [len(list((real_data / "camvid" / s).glob("*.png"))) for s in ("train", "val", "test")]
    assert [len(dm.splits()[s]) for s in ("train", "val", "test")] == counts
    assert dm.num_classes == 11 and dm.ignore_index == 11 and dm.class_names[3] == "Road"
    _, mask, _ = dm.decode_pair(dm.splits()["val"][0])
    assert set(np.unique(mask)) <= set(range(12)) and (mask == 11).any()
    weights = dm.median_frequency_weights()
    assert len(weights) == 11 and all(w > 0 for w in weights)
    road, pole = weights[3], weights[2]
    assert pole > 1 > road  # rare classes weigh more


def test_isbi_membranes_as_a_grey_folder(real_data):
    dm = FolderDataModule(root=str(real_data / "isbi_membrane" / "train"), images_dir="image",
                          masks_dir="label", in_channels=1, class_names=["cell"],
                          image_size=128, num_workers=0)  # fmt: skip
    assert sum(len(p) for p in dm.splits().values()) == 30
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (1, 128, 128)
    assert 0.5 < batch["mask"].float().mean() < 0.95  # cell interior dominates membranes


def test_ph2_folds_test_each_image_once_in_its_diagnosis_mix(real_data):
    folds = [PH2DataModule(root=str(real_data / "ph2"), fold=k).splits() for k in range(4)]
    assert folds[0] == PH2DataModule(root=str(real_data / "ph2")).splits()
    tested = [pair.image.name for splits in folds for pair in splits["test"]]
    assert len(tested) == len(set(tested)) == 160
    total = Counter(pair.label for part in folds[0].values() for pair in part)
    for splits in folds:
        mix = Counter(pair.label for pair in splits["test"])
        assert all(abs(mix[label] - count / 4) <= 1 for label, count in total.items())


def test_ph2_val_folds_validate_each_non_test_image_once_beside_the_fixed_test_split(real_data):
    plain = PH2DataModule(root=str(real_data / "ph2")).splits()
    folds = [PH2DataModule(root=str(real_data / "ph2"), val_fold=j).splits() for j in range(3)]
    assert folds[0] == plain
    assert all(splits["test"] == plain["test"] for splits in folds)
    validated = [pair.image.name for splits in folds for pair in splits["val"]]
    assert len(validated) == len(set(validated)) == 120
