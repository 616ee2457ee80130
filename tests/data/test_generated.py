"""Datamodules on small files generated here: Carvana's layout (JPEG + GIF), JPEG masks, the
decode-once cache, transforms, weight maps, and every kind of bad data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_seg.data import CarvanaDataModule, FolderDataModule
from lightning_seg.data.io import DataError
from lightning_seg.data.weight_maps import unet_weight_map
from lightning_seg.errors import ConfigurationError
from tests.data.generated import folder_dm, make_folder, scene


def make_carvana(root: Path, cars: int = 6, views: int = 4) -> Path:
    rng = np.random.default_rng(1)
    (root / "train").mkdir(parents=True)
    (root / "train_masks").mkdir()
    for c in range(cars):
        for v in range(1, views + 1):
            image, mask = scene(rng, 48, 72)
            name = f"{c:04x}abcd{c:04x}_{v:02d}"
            Image.fromarray(image).save(root / "train" / f"{name}.jpg")
            gif = Image.fromarray((mask > 0).astype(np.uint8), mode="L").convert("P")
            gif.save(root / "train_masks" / f"{name}_mask.gif")
    return root


def test_carvana_groups_views_by_car_and_loads_binary_batches(tmp_path):
    dm = CarvanaDataModule(root=str(make_carvana(tmp_path)), image_size=(32, 48), batch_size=4,
                           num_workers=0)  # fmt: skip
    splits = dm.splits()
    cars = {name: {p.label for p in pairs} for name, pairs in splits.items()}
    assert not (cars["train"] & cars["val"]) and not (cars["train"] & cars["test"])
    assert all(len(pairs) % 4 == 0 for pairs in splits.values())  # whole cars only
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 48)
    assert set(batch["mask"].unique().tolist()) <= {0, 1}


def test_carvana_random_crop_for_training(tmp_path):
    dm = CarvanaDataModule(root=str(make_carvana(tmp_path)), image_size=(48, 72),
                           train_crop=(32, 32), batch_size=2, num_workers=0)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 32, 32)
    assert next(iter(dm.val_dataloader()))["image"].shape[-2:] == (48, 72)


def test_cache_is_built_once_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d")
    calls = []
    import lightning_seg.data.cache as cache

    real = cache.read_image
    monkeypatch.setattr(cache, "read_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    folder_dm(root).prepare_data()
    assert len(calls) == 10
    folder_dm(root).prepare_data()
    assert len(calls) == 10  # decoded once: the second datamodule reads the cache
    victim = root / "images" / "case03.jpg"
    Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    folder_dm(root).prepare_data()
    assert len(calls) > 10  # the changed split is decoded again


def test_cached_arrays_reach_worker_processes_as_memory_maps(tmp_path):
    dm = folder_dm(make_folder(tmp_path / "d"), num_workers=2)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.val_dataloader())
    assert sum(len(b["image"]) for b in batches) == len(dm.splits()["val"])


def test_jpeg_masks_snap_to_the_palette_and_report_far_pixels(tmp_path, caplog):
    root = make_folder(tmp_path / "d", mask_format="jpg")
    dm = folder_dm(root, mask_suffix=".jpg")
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    assert any("far" in r.getMessage() for r in caplog.records)
    dm.setup("fit")
    masks = torch.cat([b["mask"] for b in dm.val_dataloader()])
    assert set(masks.unique().tolist()) == {0, 1, 2}


def test_weight_maps_follow_the_augmented_mask(tmp_path):
    dm = folder_dm(make_folder(tmp_path / "d"), num_classes=3,
                   train_transforms=[{"name": "HorizontalFlip", "p": 1.0}])  # fmt: skip
    dm.weight_map = {"w0": 10.0, "sigma": 5.0}
    dm.prepare_data()
    dm.setup("fit")
    sample = dm.datasets["train"][0]
    expected = unet_weight_map(sample["mask"].numpy(), 10.0, 5.0)
    np.testing.assert_allclose(sample["weight"].numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cache", [True, False])
def test_train_splits_train_and_val_trains_on_both_with_training_augmentation(tmp_path, cache):
    root = make_folder(tmp_path / "d", n=12)
    flip = [{"name": "HorizontalFlip", "p": 1.0}]
    alone = folder_dm(root, cache=cache, train_transforms=[])
    both = folder_dm(root, cache=cache, train_transforms=flip, train_splits=["train", "val"])
    for dm in (alone, both):
        dm.prepare_data()
        dm.setup("fit")
    train, val = alone.datasets["train"], alone.datasets["val"]
    joined = both.datasets["train"]
    assert len(joined) == len(train) + len(val) and len(both.datasets["val"]) == len(val)
    last_val = val[len(val) - 1]["image"]
    assert torch.equal(joined[len(joined) - 1]["image"], last_val.flip(-1))  # val, augmented
    assert torch.equal(joined[0]["image"], train[0]["image"].flip(-1))


@pytest.mark.parametrize("cache", [True, False])
def test_samples_carry_their_index_and_are_named_by_their_file(tmp_path, cache):
    root = make_folder(tmp_path / "d", n=12)
    dm = folder_dm(root, cache=cache)
    dm.prepare_data()
    dm.setup("test")
    test = dm.datasets["test"]
    names = dm.sample_names("test")
    # The split's own images, relative to the data folder, in the order the dataset serves them.
    assert names == [f"images/{pair.image.name}" for pair in dm.splits()["test"]]
    assert [int(test[i]["index"]) for i in range(len(test))] == list(range(len(names)))


def test_tiles_are_named_by_their_corner_whether_cached_or_not(tmp_path):
    class TiledFolder(FolderDataModule):
        tiled = True  # cut 32 x 32 tiles at full resolution, as the sandstone data does

    root = make_folder(tmp_path / "d", n=12)
    names = {}
    for cache in (True, False):
        dm = folder_dm(root, TiledFolder, cache=cache)
        dm.prepare_data()
        dm.setup("test")
        names[cache] = dm.sample_names("test")
        assert len(names[cache]) == len(dm.datasets["test"])
    assert names[True] == names[False]
    first = names[True][0]
    assert first.startswith("images/") and first.endswith("#0,0")
    assert len(set(names[True])) == len(names[True]) > len(dm.splits()["test"])


def test_train_splits_never_include_the_test_split(tmp_path):
    with pytest.raises(ConfigurationError, match=r"data\.train_splits: .*\['train', 'test'\]"):
        folder_dm(make_folder(tmp_path / "d"), train_splits=["train", "test"])


def test_unknown_transform_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="HorizontalFlip"):
        FolderDataModule(train_transforms=[{"name": "HorizontalFlipp"}])


def test_a_rotation_of_non_square_images_fails_when_configured_not_when_batched():
    rotate = {"name": "RandomRotate90", "p": 0.5}
    with pytest.raises(ConfigurationError, match=r"train_transforms: RandomRotate90 .* 32 x 48"):
        FolderDataModule(image_size=(32, 48), train_transforms=[rotate])
    # A square crop first makes the rotation safe; square images never needed one.
    crop = {"name": "RandomCrop", "height": 32, "width": 32}
    FolderDataModule(image_size=(32, 48), train_transforms=[crop, rotate])
    FolderDataModule(image_size=32, train_transforms=[rotate])


# ----------------------------------------------------------------------------- bad data
def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize(
    ("damage", "culprit", "message"),
    [
        (lambda r: corrupt(r / "images" / "case02.jpg"), "case02.jpg", "truncated"),
        (lambda r: (r / "images" / "case04.jpg").write_bytes(b"not a jpeg at all"),
         "case04.jpg", "image"),
        (lambda r: (r / "masks" / "case05.png").unlink(), "case05", "no mask"),
        (lambda r: Image.new("RGB", (20, 20)).save(r / "masks" / "case06.png"),
         "case06.png", "mask is 20x20 but its image case06.jpg is 60x40"),
        (lambda r: Image.new("RGB", (60, 40), (0, 255, 0)).save(r / "masks" / "case07.png"),
         "case07.png", "unexpected"),
        (lambda r: (r / "images" / "notes.txt").write_text("hello"), "notes.txt",
         "not an image"),
    ],
)  # fmt: skip
def test_bad_data_names_the_file_and_the_problem(tmp_path, damage, culprit, message):
    root = make_folder(tmp_path / "d")
    damage(root)
    with pytest.raises(DataError) as error:
        folder_dm(root).prepare_data()
    assert culprit in str(error.value) and message in str(error.value)


def test_skip_invalid_warns_with_the_list_and_goes_on(tmp_path, caplog):
    root = make_folder(tmp_path / "d")
    corrupt(root / "images" / "case02.jpg")
    (root / "masks" / "case05.png").unlink()
    dm = folder_dm(root, skip_invalid=True)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "case02.jpg" in text and "case05" in text
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) + len(dm.splits()["test"]) <= 9


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        folder_dm(tmp_path / "d").prepare_data()


def test_missing_root_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigurationError, match="LIGHTNING_SEG_DATA"):
        folder_dm(tmp_path / "nowhere").prepare_data()


def test_folds_cross_validate_a_folder_and_a_missing_fold_is_a_configuration_error(tmp_path):
    root = make_folder(tmp_path / "d", n=12)
    quarters = {"split_fractions": (0.5, 0.25, 0.25)}
    tested = [
        pair.image.name
        for fold in range(4)
        for pair in folder_dm(root, fold=fold, **quarters).splits()["test"]
    ]
    assert sorted(tested) == [f"case{i:02d}.jpg" for i in range(12)]
    with pytest.raises(ConfigurationError, match=r"data\.fold: .*fold 4 does not exist.*folds 0-3"):
        folder_dm(root, fold=4, **quarters).splits()
    with pytest.raises(ConfigurationError, match=r"data\.val_fold: .*val_fold 3 does not exist"):
        folder_dm(root, val_fold=3, **quarters).splits()


def test_a_dataset_that_comes_split_into_folders_has_no_folds(tmp_path):
    for split in ("train", "val", "test"):
        make_folder(tmp_path / "d" / split, n=2)
    assert len(folder_dm(tmp_path / "d").splits()["val"]) == 2  # fold 0: the folders as they are
    with pytest.raises(ConfigurationError, match=r"data\.fold: .*comes split into train / val"):
        folder_dm(tmp_path / "d", fold=1).splits()
    with pytest.raises(ConfigurationError, match=r"data\.val_fold: .*comes split into train / val"):
        folder_dm(tmp_path / "d", val_fold=1).splits()
