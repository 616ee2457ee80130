"""``lightning-seg check-data`` and PH2's download on a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_seg.data import PH2DataModule
from lightning_seg.entry import main
from tests.data.test_generated import make_folder


def test_check_data_reports_counts_sizes_classes_and_problems(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    (root / "masks" / "case03.png").unlink()
    (root / "images" / "case05.jpg").write_bytes(b"garbage")
    experiment = tmp_path / "mine.yaml"
    experiment.write_text(yaml.safe_dump({"data": {
        "class_path": "lightning_seg.data.FolderDataModule",
        "init_args": {"root": str(root), "num_classes": 3, "masks": {
            "type": "palette", "colors": [[0, 0, 0], [255, 0, 0], [0, 0, 255]]}},
    }}))  # fmt: skip
    assert main(["check-data", "--experiment", str(experiment)]) == 1
    out = capsys.readouterr().out
    assert "train:" in out and "60x40 (8)" in out
    assert "class frequencies" in out and "class_1" in out
    assert "problems: 2" in out and "case03" in out and "case05.jpg" in out


def test_check_data_on_a_named_experiment(real_data, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTNING_SEG_DATA", str(real_data))
    assert main(["check-data", "--experiment", "unet_sandstone"]) == 0
    out = capsys.readouterr().out
    assert "problems: 0" in out and "996x1024" in out and "phase_3" in out


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        CountingHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    CountingHandler.requests = []
    handler = functools.partial(CountingHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def make_ph2_zip(path: Path, cases: int = 8) -> None:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        rows = ["Name\tClinical Diagnosis"]
        for i in range(cases):
            name = f"IMD{i:03d}"
            image = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
            mask = np.zeros((30, 40), bool)
            mask[5:20, 10:30] = True
            base = f"PH2Dataset/PH2 Dataset images/{name}"
            for member, picture in ((f"{base}/{name}_Dermoscopic_Image/{name}.bmp", image),
                                    (f"{base}/{name}_lesion/{name}_lesion.bmp",
                                     Image.fromarray(mask))):  # fmt: skip
                tmp = path.parent / "tmp.bmp"
                picture.save(tmp)
                archive.write(tmp, member)
            rows.append(f"{name}\t{i % 3}")
        archive.writestr("PH2Dataset/PH2_dataset.txt", "\n".join(rows) + "\n")


def test_ph2_downloads_verifies_and_extracts_once(tmp_path, server):
    served, url = server
    make_ph2_zip(served / "PH2Dataset.zip")
    checksum = "sha256:" + hashlib.sha256((served / "PH2Dataset.zip").read_bytes()).hexdigest()
    options = {"root": str(tmp_path / "ph2"), "url": f"{url}/PH2Dataset.zip",
               "checksum": checksum, "image_size": 32, "num_workers": 0}  # fmt: skip
    dm = PH2DataModule(**options)
    dm.prepare_data()
    assert CountingHandler.requests == ["/PH2Dataset.zip"]
    assert sum(len(p) for p in dm.splits().values()) == 8
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape[-2:] == (32, 32)
    PH2DataModule(**options).prepare_data()
    assert len(CountingHandler.requests) == 1  # present: never downloaded again


def test_ph2_bad_checksum_leaves_nothing_behind(tmp_path, server):
    served, url = server
    make_ph2_zip(served / "PH2Dataset.zip")
    dm = PH2DataModule(root=str(tmp_path / "ph2"), url=f"{url}/PH2Dataset.zip",
                       checksum="sha256:" + "0" * 64)  # fmt: skip
    with pytest.raises(Exception, match="checksum"):
        dm.prepare_data()
    assert not (tmp_path / "ph2" / "PH2Dataset").exists()


def test_damaged_archive_left_by_an_earlier_attempt_is_downloaded_again(tmp_path, server):
    served, url = server
    make_ph2_zip(served / "PH2Dataset.zip")
    root = tmp_path / "ph2"
    left = root / ".downloads" / "PH2Dataset.zip"
    left.parent.mkdir(parents=True)
    left.write_bytes((served / "PH2Dataset.zip").read_bytes()[:500])  # a killed download
    dm = PH2DataModule(root=str(root), url=f"{url}/PH2Dataset.zip", image_size=32, num_workers=0)
    dm.prepare_data()  # no checksum to tell: the damaged file is found out and fetched again
    assert CountingHandler.requests == ["/PH2Dataset.zip"]
    assert sum(len(p) for p in dm.splits().values()) == 8


def test_truncated_zip_is_called_damaged_not_unknown(tmp_path):
    from lightning_seg.data.download import DownloadError, archive_kind

    make_ph2_zip(tmp_path / "whole.zip")
    truncated = tmp_path / "PH2Dataset.zip"
    truncated.write_bytes((tmp_path / "whole.zip").read_bytes()[:500])
    with pytest.raises(DownloadError, match="damaged"):
        archive_kind(truncated)
