"""Worker process of the DDP metrics test (``tests/test_metrics.py``); not a test module.

It lives in its own module because ``spawn`` pickles the target function by reference and the
child imports it by module name: the test puts this folder on ``sys.path`` before starting the
children (spawn hands the parent's ``sys.path`` to them), so ``ddp_worker`` imports there however
pytest imported the test module (``--import-mode=importlib`` gives it no importable name).
"""

from __future__ import annotations

import json
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from lightning_seg.metrics import build_metrics

# A peer that dies makes the others fail after this long instead of hanging the test run.
PROCESS_GROUP_TIMEOUT = timedelta(seconds=60)


def run_worker(rank: int, world_size: int, workdir: str) -> None:
    """Join a gloo group, update each scenario's metrics with this rank's batches, save compute().

    ``workdir/data.pt`` holds ``{scenario: {"num_classes", "ignore_index", "class_names",
    "shards": [batches of rank 0, batches of rank 1, ...]}}``; the results go to
    ``workdir/rank<rank>.json`` (or the traceback to ``rank<rank>.error``).
    """
    root = Path(workdir)
    torch.set_num_threads(1)  # two processes on a small CI machine: do not oversubscribe
    try:
        dist.init_process_group(
            "gloo",
            init_method=(root / "pg_init").resolve().as_uri(),
            rank=rank,
            world_size=world_size,
            timeout=PROCESS_GROUP_TIMEOUT,
        )
        try:
            scenarios = torch.load(root / "data.pt", weights_only=True)
            results = {}
            for name, spec in scenarios.items():
                metrics = build_metrics(
                    spec["num_classes"], spec["ignore_index"], spec["class_names"], interval=True
                )
                for preds, target in spec["shards"][rank]:
                    metrics.update(preds, target)
                # compute() all-reduces the states over the group; it must run on every rank.
                results[name] = {key: value.item() for key, value in metrics.compute().items()}
            (root / f"rank{rank}.json").write_text(json.dumps(results))
        finally:
            dist.destroy_process_group()
    except BaseException:
        (root / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
