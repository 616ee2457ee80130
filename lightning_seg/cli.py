"""Command line: ``lightning-seg {fit,validate,test,predict}`` on LightningCLI.

``--experiment NAME`` loads ``experiments/NAME.yaml``, names the run and its folder
``runs/NAME/<run id>/``; every Trainer flag passes through (``--trainer.devices=2``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_seg.callbacks import BestCheckpoint, LastCheckpoint, LoggedConfig, RunSummary
from lightning_seg.data import SegmentationDataModule
from lightning_seg.data.download import DownloadError
from lightning_seg.data.io import DataError
from lightning_seg.errors import ConfigurationError
from lightning_seg.images import PredictionImages
from lightning_seg.task import SegmentationTask
from lightning_seg.tracking import choose_wandb_mode, make_wandb_logger, new_run_id, offline_notice

LINKED_FROM_DATA = ("num_classes", "in_channels", "ignore_index", "class_names")
# Errors about the user's configuration or data: one line on stderr and exit status 2, never a
# traceback from deep inside a library.
USER_ERRORS = (ConfigurationError, DataError, DownloadError)


def experiments_dir() -> Path:
    """``$LIGHTNING_SEG_EXPERIMENTS``, else ``./experiments``, else the one beside the package."""
    if env := os.environ.get("LIGHTNING_SEG_EXPERIMENTS"):
        return Path(env)
    local = Path.cwd() / "experiments"
    return local if local.is_dir() else Path(__file__).resolve().parent.parent / "experiments"


def available_experiments() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml") if not p.stem.startswith("_"))


def experiment_path(name: str) -> Path:
    """The YAML of a named experiment; an unknown name lists the available ones."""
    path = experiments_dir() / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available_experiments()) or "(none)"
        raise ConfigurationError(
            f"unknown experiment {name!r} (no {path}); available experiments: {names}"
        )
    return path


def expand_experiment(argv: list[str]) -> list[str]:
    """Insert ``--config experiments/NAME.yaml`` after the subcommand for ``--experiment NAME``,
    so that every later flag overrides the experiment's YAML."""
    for i, arg in enumerate(argv):
        if arg == "--experiment" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--experiment="):
            name = arg.split("=", 1)[1]
        else:
            continue
        if not argv or argv[0].startswith("-"):
            return argv
        return [argv[0], "--config", str(experiment_path(name)), *argv[1:]]
    return argv


class SegmentationCLI(LightningCLI):
    """LightningCLI with lightning_seg's defaults: W&B logging, run folders, checkpoints."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        self.summary: RunSummary | None = None
        super().__init__(
            model_class=SegmentationTask,
            datamodule_class=SegmentationDataModule,
            subclass_mode_data=True,
            save_config_callback=LoggedConfig,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            parser_kwargs={
                "description": "lightning_seg: semantic segmentation on PyTorch Lightning. "
                "Subcommands fit / validate / test / predict take --experiment NAME "
                "(experiments/NAME.yaml) and any Trainer flag. Other commands: "
                + ", ".join(f"lightning-seg {name}" for name in TOOLS)
                + "."
            },
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="Experiment name: loads experiments/NAME.yaml, names the W&B run and the run "
            "folder runs/NAME/<run id>/. Defaults to the name of the last --config file.",
        )
        parser.add_argument(
            "--runs_dir", type=str, default="runs", help="Folder that holds every run's folder."
        )
        parser.add_class_arguments(TrackingOptions, "tracking")
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # Lightning re-applies the checkpoint's hyperparameters to the config; the ones the data
        # defines are links, not settings, and must be left to the datamodule.
        ckpt_path = self.config.get(str(self.config.get("subcommand")), {}).get("ckpt_path")
        if not ckpt_path:
            return
        import torch

        if not Path(ckpt_path).is_file():
            raise ConfigurationError(f"checkpoint not found: {ckpt_path}")
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get(
            "hyper_parameters", {}
        )
        for key in (*LINKED_FROM_DATA, "_instantiator", "_class_path"):
            hparams.pop(key, None)
        if hparams:
            self.config = self.parser.parse_object(
                {self.config.subcommand: {"model": hparams}}, self.config
            )

    def after_instantiate_classes(self) -> None:
        # A pretrained encoder is fed the normalisation it was trained with; the datamodule
        # keeps it, so training, W&B images, checkpoints and predict all use the same one.
        normalization = self.model.input_normalization
        if normalization and hasattr(self.datamodule, "use_encoder_normalization"):
            self.datamodule.use_encoder_normalization(*normalization)
        # A loss that needs per-pixel weight maps (the U-Net boundary loss) asks the data
        # pipeline for them, so that `loss: boundary_bce` alone is a complete configuration.
        spec = self.model.weight_map_spec
        if spec and self.datamodule is not None and hasattr(self.datamodule, "weight_map"):
            self.datamodule.weight_map = spec

    # ------------------------------------------------------------------ run folder and trainer
    def experiment_name(self) -> str:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("experiment"):
            return str(config.experiment)
        files = config.get("config") or []
        return Path(str(files[-1])).stem if files else "default"

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config[self.subcommand] if self.subcommand else self.config
        experiment = self.experiment_name()
        run_id = new_run_id()
        run_dir = (Path(config.runs_dir) / experiment / run_id).resolve()
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        callbacks = [
            self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys
        ]

        if trainer_config.get("default_root_dir") is None:
            trainer_config["default_root_dir"] = str(run_dir)
        if trainer_config.get("logger") in (None, True):
            if self.subcommand == "predict":
                trainer_config["logger"] = False
            else:
                choose_wandb_mode()
                trainer_config["logger"] = make_wandb_logger(
                    run_dir,
                    experiment,
                    run_id,
                    job_type=self.subcommand or "fit",
                    group=getattr(self.datamodule, "name", None),
                    tags=self.run_tags(),
                )
        if self.subcommand == "fit":
            user_callbacks = trainer_config.get("callbacks") or []
            if not any(isinstance(c, ModelCheckpoint) for c in user_callbacks):
                callbacks += [
                    BestCheckpoint(run_dir / "checkpoints"),
                    LastCheckpoint(run_dir / "checkpoints"),
                ]
            self.summary = RunSummary(run_dir, experiment)
            callbacks.append(self.summary)
        tracking: TrackingOptions = self._get(self.config_init, "tracking")
        if isinstance(trainer_config["logger"], WandbLogger) and tracking.num_images > 0:
            callbacks.append(PredictionImages(tracking.images_every_n_epochs, tracking.num_images))
        self.run_dir = run_dir
        return self._instantiate_trainer(trainer_config, callbacks)

    def run_tags(self) -> list[str]:
        hp = self.model.hparams
        loss = (
            hp["loss"] if isinstance(hp["loss"], str) else "+".join(t["name"] for t in hp["loss"])
        )
        tags = [f"model:{hp['model']}", f"loss:{loss}"]
        args = hp.get("model_args") or {}
        if encoder := args.get("encoder_name") or args.get("encoder"):
            tags.append(f"encoder:{encoder}")
        return tags

    # ------------------------------------------------------------------ after the run
    @rank_zero_only
    def _report(self, stage: str) -> None:
        logger = self.trainer.logger
        tracking: TrackingOptions = self._get(self.config_init, "tracking")
        if stage == "fit" and tracking.log_model and isinstance(logger, WandbLogger):
            log_best_checkpoint(logger, self.trainer)
        if stage in ("validate", "test"):
            evaluation = self.write_evaluation(stage)
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            notice = offline_notice(logger)
            logger.experiment.finish()  # flush everything before telling where it is
            if notice:
                print(notice)
        if stage == "fit" and self.summary is not None and self.summary.summary:
            print(self.summary.line())
        if stage in ("validate", "test"):
            prefix = "val" if stage == "validate" else "test"
            scores = " ".join(
                f"{k}={v:.4f}"
                for k, v in evaluation.items()
                if k in (f"{prefix}/iou", f"{prefix}/f1")
            )
            print(f"{stage} done: {scores} checkpoint={evaluation.get('checkpoint') or 'none'}")

    def write_evaluation(self, stage: str) -> dict[str, Any]:
        """``validate_summary.json`` / ``test_summary.json`` in the run folder, for ``compare``."""
        config = self.config[self.subcommand]
        evaluation = {
            "experiment": self.experiment_name(),
            "checkpoint": str(Path(config.ckpt_path).resolve()) if config.ckpt_path else None,
            **{k: float(v) for k, v in self.trainer.callback_metrics.items()},
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / f"{stage}_summary.json"
        path.write_text(json.dumps(evaluation, indent=2) + "\n")
        return evaluation

    def after_fit(self) -> None:
        self._report("fit")

    def after_validate(self) -> None:
        self._report("validate")

    def after_test(self) -> None:
        self._report("test")


@dataclass
class TrackingOptions:
    """What runs log besides metrics.

    Args:
        images_every_n_epochs: log prediction images every N epochs (default: 4 times a run).
        num_images: fixed validation / test images logged with their masks (0: none).
        log_model: upload the best checkpoint as a W&B model artifact at the end of fit.
    """

    images_every_n_epochs: int | None = None
    num_images: int = 8
    log_model: bool = False


def log_best_checkpoint(logger: WandbLogger, trainer: Trainer) -> None:
    """The best checkpoint as a W&B model artifact (aliases ``best`` and ``latest``)."""
    import wandb

    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if not best:
        return
    score = getattr(trainer.checkpoint_callback, "best_model_score", None)
    artifact = wandb.Artifact(
        name=f"model-{logger.experiment.id}",
        type="model",
        metadata={"val/iou": float(score) if score is not None else None, "file": Path(best).name},
    )
    artifact.add_file(best, name="best.ckpt")
    logger.experiment.log_artifact(artifact, aliases=["best", "latest"])


def _models(argv: list[str]) -> int:
    from lightning_seg.models.summary import models_command

    return models_command(argv)


def _convert_weights(argv: list[str]) -> int:
    from lightning_seg.models.weights import convert_weights_command

    return convert_weights_command(argv)


def _check_data(argv: list[str]) -> int:
    from lightning_seg.data.checks import check_data_command

    return check_data_command(argv)


def _compare(argv: list[str]) -> int:
    from lightning_seg.runs import compare_command

    return compare_command(argv)


def _sync(argv: list[str]) -> int:
    from lightning_seg.runs import sync_command

    return sync_command(argv)


def _predict_files(argv: list[str]) -> int:
    from lightning_seg.inference import predict_command

    return predict_command(argv)


def _export(argv: list[str]) -> int:
    from lightning_seg.export import export_command

    return export_command(argv)


# Subcommands beyond LightningCLI's fit / validate / test / predict.
TOOLS = {
    "export": _export,
    "models": _models,
    "convert-weights": _convert_weights,
    "check-data": _check_data,
    "compare": _compare,
    "sync": _sync,
}


def main(argv: list[str] | None = None) -> SegmentationCLI | None:
    """Entry point of ``lightning-seg`` and ``python -m lightning_seg``."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    # `predict --ckpt C --input ...` predicts files at full resolution; `predict --experiment ...
    # --ckpt_path C` stays LightningCLI's predict over the datamodule's test split.
    files = bool(argv) and argv[0] == "predict" and any(a.startswith("--input") for a in argv)
    if argv and (argv[0] in TOOLS or files):
        tool = _predict_files if files else TOOLS[argv[0]]
        try:
            code = tool(argv[1:])
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        if code:
            raise SystemExit(code)
        return None
    try:
        argv = expand_experiment(argv)
        # LightningCLI reads sys.argv itself; give it the expanded arguments and a clear name.
        saved, sys.argv = sys.argv, ["lightning-seg", *argv]
        try:
            return SegmentationCLI()
        finally:
            if not from_command_line:
                sys.argv = saved
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
