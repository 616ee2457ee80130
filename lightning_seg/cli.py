"""Command line: ``lightning-seg {fit,validate,test,predict}`` on LightningCLI.

``--experiment NAME`` loads ``experiments/NAME.yaml``, names the run and its folder
``runs/NAME/<run id>/``; every Trainer flag passes through (``--trainer.devices=2``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lightning_seg.callbacks import (
    BestCheckpoint,
    LastCheckpoint,
    LoggedConfig,
    RunSummary,
    check_tuning_data,
)
from lightning_seg.commands import TOOLS
from lightning_seg.console import console_callbacks, quiet_libraries
from lightning_seg.data import SegmentationDataModule
from lightning_seg.errors import ConfigurationError
from lightning_seg.evaluations import image_records, overlapping_images, worst_images
from lightning_seg.experiments import (
    EVALUATING,
    checkpoint_run_dir,
    expand_experiment,
    option,
    with_checkpoint_config,
)
from lightning_seg.images import PredictionImages
from lightning_seg.inference import load_checkpoint
from lightning_seg.precision import SPEEDUP_VARIABLE, fast_precision
from lightning_seg.runs import iou_with_interval
from lightning_seg.split_predictions import SplitMaskWriter
from lightning_seg.task import SegmentationTask
from lightning_seg.tracking import (
    TrackingOptions,
    choose_wandb_mode,
    log_best_checkpoint,
    make_wandb_logger,
    new_run_id,
    offline_notice,
)

LINKED_FROM_DATA = ("num_classes", "in_channels", "ignore_index", "class_names", "class_weights")
# How a checkpoint's weights are evaluated, not what they are: `test --ckpt_path C
# --model.tta=none` (or --model.threshold, --model.postprocess) overrides the checkpoint's value.
EVALUATION_SETTINGS = ("tta", "threshold", "postprocess")


class SegmentationCLI(LightningCLI):
    """LightningCLI with lightning_seg's defaults: W&B logging, run folders, checkpoints."""

    def __init__(
        self,
        args: list[str] | None = None,
        run: bool = True,
        extra_callbacks: Sequence[Callback] = (),
        **kwargs: Any,
    ) -> None:
        self.summary: RunSummary | None = None
        # Callbacks that cannot be configured in YAML (a hyper-parameter search's pruning hook):
        # added to the Trainer that the configuration builds, which is otherwise unchanged.
        self.extra_callbacks = list(extra_callbacks)
        super().__init__(
            model_class=SegmentationTask,
            datamodule_class=SegmentationDataModule,
            subclass_mode_data=True,
            save_config_callback=LoggedConfig,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            parser_kwargs={
                "prog": "lightning-seg",
                "description": "lightning_seg: semantic segmentation on PyTorch Lightning. "
                "Subcommands fit / validate / test / predict take --experiment NAME "
                "(experiments/NAME.yaml) and any Trainer flag. Other commands: "
                + ", ".join(f"lightning-seg {name}" for name in TOOLS)
                + ".",
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
            "--runs_dir",
            type=str,
            default="runs",
            help="Folder that holds every run's folder (--trainer.default_root_dir, when set, "
            "takes its place).",
        )
        parser.add_argument(
            "--defaults",
            type=list[str] | None,
            default=None,
            help="Shared YAML files an experiment is composed from (relative to experiments/), "
            "applied before it by --experiment; recorded here, ignored afterwards.",
        )
        parser.add_argument(
            "--auto_precision",
            type=bool,
            default=False,
            help="When trainer.precision is not set: bf16-mixed where the hardware runs it fast "
            "(CUDA GPUs with bf16, CPUs with AMX), 32-true elsewhere; the choice is recorded in "
            "the run config.",
        )
        parser.add_class_arguments(TrackingOptions, "tracking")
        for key in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # Lightning re-applies the checkpoint's hyperparameters to the config (its tuned
        # threshold beats the run config's 0.5); the ones the data defines are links, not
        # settings, and must be left to the datamodule; and how to evaluate the weights
        # (EVALUATION_SETTINGS) stays the user's choice when a flag names it.
        ckpt_path = self.config.get(str(self.config.get("subcommand")), {}).get("ckpt_path")
        if not ckpt_path:
            return
        if not Path(ckpt_path).is_file():
            raise ConfigurationError(f"checkpoint not found: {ckpt_path}")
        hparams = load_checkpoint(ckpt_path).get("hyper_parameters", {})
        configured = self.config[self.config.subcommand].model.model
        if hparams.get("model") and hparams["model"] != configured:
            raise ConfigurationError(
                f"{ckpt_path} holds a {hparams['model']!r} network but experiment "
                f"{self.experiment_name()!r} builds {configured!r}: evaluate it with its own "
                "experiment (or leave --experiment out to use the checkpoint's run config)"
            )
        self.check_classes(ckpt_path, hparams.get("num_classes"))
        for key in (*LINKED_FROM_DATA, "_instantiator", "_class_path"):
            hparams.pop(key, None)
        for key in EVALUATION_SETTINGS:  # given on the command line: the user's value wins
            if option(sys.argv[1:], f"--model.{key}") is not None:
                hparams.pop(key, None)
        if hparams:
            self.config = self.parser.parse_object(
                {self.config.subcommand: {"model": hparams}}, self.config
            )

    def check_classes(self, ckpt_path: str, classes: int | None) -> None:
        """Refuse, before building anything, a checkpoint whose classes the data does not have.
        (Building the datamodule alone is cheap: it reads no file until setup.)"""
        data = self.config[self.config.subcommand].get("data")
        if classes is None or data is None or not data.get("class_path"):
            return
        module, _, name = str(data.class_path).rpartition(".")
        init_args = data.get("init_args")
        kwargs = init_args.as_dict() if init_args is not None else {}
        datamodule = getattr(importlib.import_module(module), name)(**kwargs)
        if datamodule.num_classes != classes:
            raise ConfigurationError(
                f"{ckpt_path} predicts {classes} class(es) but the {datamodule.name} data of "
                f"experiment {self.experiment_name()!r} has {datamodule.num_classes}: evaluate it "
                "on the data it was trained for"
            )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("auto_precision") and config.trainer.get("precision") is None:
            config.trainer.precision = fast_precision(config.trainer.get("accelerator"))
            speedup = os.environ.get(SPEEDUP_VARIABLE)
            measured = f" (a bf16 step measured {speedup}x as fast as fp32)" if speedup else ""
            rank_zero_info(f"auto_precision: {config.trainer.precision} on this hardware{measured}")

    def after_instantiate_classes(self) -> None:
        # A pretrained encoder is fed the normalisation it was trained with; the datamodule
        # keeps it, so training, W&B images, checkpoints and predict all use the same one.
        normalization = self.model.input_normalization
        if normalization and hasattr(self.datamodule, "use_encoder_normalization"):
            self.datamodule.use_encoder_normalization(*normalization)
        if hasattr(self.datamodule, "use_network_stride"):
            self.datamodule.use_network_stride(getattr(self.model.network, "stride", 1) or 1)
        # A loss that needs per-pixel weight maps (the U-Net boundary loss) gets them from the
        # data's weight_map option; without it, say so before any training starts.
        needs = self.model.needs_weight_map and self.subcommand in ("fit", "validate", "test")
        if needs and not getattr(self.datamodule, "weight_map", None):
            raise ConfigurationError(
                "the boundary loss needs per-pixel weights: set data.init_args.weight_map, "
                "e.g. --data.init_args.weight_map='{w0: 10.0, sigma: 5.0}'"
            )

    # ------------------------------------------------------------------ run folder and trainer
    def experiment_name(self) -> str:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        if config.get("experiment"):
            return str(config.experiment)
        files = config.get("config") or []
        return Path(str(files[-1])).stem if files else "default"

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit" and self.model.hparams.get("tune_threshold"):
            check_tuning_data(self.datamodule)  # before a run folder exists
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        # Lightning's root folder is where a user expects checkpoints and logs: it holds the
        # run folders, as --runs_dir does, and each run's trainer writes into its own.
        runs_dir = trainer_config.get("default_root_dir") or config.runs_dir
        experiment = self.experiment_name()
        run_id = new_run_id()
        run_dir = (Path(runs_dir) / experiment / run_id).resolve()
        evaluated = self.subcommand in EVALUATING and config.get("ckpt_path")
        own = checkpoint_run_dir(config.ckpt_path) if config.get("ckpt_path") else None
        if own is not None:
            # Evaluating a run's checkpoint: its results live with that run, whatever the
            # experiment flags say, and no new run folder appears beside it. Resuming a fit
            # goes on in its folder, under its W&B run.
            # Evaluations add their test/* (or val/*) metrics to that fit's W&B run, so the
            # dashboard shows val and test side by side, one row per trained model.
            run_dir, run_id = own, own.name
            os.environ["LIGHTNING_SEG_RUN_ID"] = run_id  # DDP children resume it too
        callbacks = [
            self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys
        ]

        tracking: TrackingOptions = self._get(self.config_init, "tracking")
        trainer_config["default_root_dir"] = str(run_dir)
        if trainer_config.get("logger") in (None, True):
            if self.subcommand == "predict":
                trainer_config["logger"] = False
            else:
                choose_wandb_mode()
                trainer_config["logger"] = make_wandb_logger(
                    run_dir,
                    own.parent.name if own is not None else experiment,
                    run_id,
                    # The fit run's id (its job type is part of it) when the run is known.
                    job_type="fit" if own is not None else self.subcommand or "fit",
                    group=tracking.group or getattr(self.datamodule, "name", None),
                    tags=self.run_tags(),
                    # An evaluation of an unknown run says so in its name and never counts as
                    # a fit run.
                    name=f"{experiment}-{self.subcommand}" if evaluated and own is None else None,
                    resume=own is not None,
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
        if self.subcommand == "predict":
            checkpoint = self.config[self.subcommand].get("ckpt_path")
            stem = Path(checkpoint).stem if checkpoint else "no-checkpoint"
            self.mask_writer = SplitMaskWriter(run_dir / "predictions" / f"test-{stem}")
            callbacks.append(self.mask_writer)
        if isinstance(trainer_config["logger"], WandbLogger) and tracking.num_images > 0:
            callbacks.append(PredictionImages(tracking.images_every_n_epochs, tracking.num_images))
        callbacks += console_callbacks(trainer_config) + self.extra_callbacks
        self.run_dir = run_dir
        return self._instantiate_trainer(trainer_config, callbacks)

    def run_tags(self) -> list[str]:
        hp = self.model.hparams
        loss = (
            hp["loss"] if isinstance(hp["loss"], str) else "+".join(t["name"] for t in hp["loss"])
        )
        tags = [f"model:{hp['model']}", f"loss:{loss}"]
        args = hp.get("model_args") or {}
        for part in [args, *(args.get("members") or [])]:  # an ensemble's members too
            if encoder := part.get("encoder_name") or part.get("encoder"):
                tags.append(f"encoder:{encoder}")
        return list(dict.fromkeys(tags))

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
            scores = []
            if f"{prefix}/iou" in evaluation:
                scores.append(f"{prefix}/iou={iou_with_interval(evaluation, prefix)}")
            if f"{prefix}/f1" in evaluation:
                scores.append(f"{prefix}/f1={evaluation[f'{prefix}/f1']:.4f}")
            checkpoint = evaluation.get("checkpoint") or "none"
            if evaluation.get("images"):
                print(f"worst {prefix} images: {worst_images(evaluation['images'])}")
            if seen := evaluation.get("images_trained_on"):
                print(
                    f"warning: {len(seen)} {prefix} image(s) are training images of this "
                    f"checkpoint (e.g. {seen[0]}): {prefix}/iou is not a held-out score"
                )
            if chosen := evaluation.get("images_chosen_on"):
                print(
                    f"warning: {len(chosen)} {prefix} image(s) are validation images of this "
                    f"checkpoint's fit, which chose its epoch and threshold (e.g. {chosen[0]}): "
                    f"{prefix}/iou is not a held-out score"
                )
            if evaluation.get("held_out") is False:
                scores.append("held_out=false")
            print(f"{stage} done: {' '.join(scores)} checkpoint={checkpoint}")

    def write_evaluation(self, stage: str) -> dict[str, Any]:
        """``evaluations/<stage>-<checkpoint>.json`` in the checkpoint's run folder (the new run
        folder when the checkpoint lives in none), for ``compare`` and scripts."""
        config = self.config[self.subcommand]
        evaluation = {
            "experiment": self.experiment_name(),
            "checkpoint": str(Path(config.ckpt_path).resolve()) if config.ckpt_path else None,
            **{k: float(v) for k, v in self.trainer.callback_metrics.items()},
        }
        split = "test" if stage == "test" else "val"
        if hasattr(self.datamodule, "sample_names"):
            names = self.datamodule.sample_names(split)
            counts = self.model.image_counts.get(split)
            if counts is not None:
                evaluation["images"] = image_records(counts, names)
            if self.model.trained_on is not None:  # unknown for checkpoints from elsewhere
                seen = overlapping_images(names, self.model.trained_on)
                evaluation["held_out"] = not seen
                evaluation["images_trained_on"] = seen
            if stage == "test" and self.model.chosen_on is not None:  # validate scores them
                chosen = overlapping_images(names, self.model.chosen_on)
                evaluation["held_out"] = evaluation.get("held_out", True) and not chosen
                evaluation["images_chosen_on"] = chosen
        name = Path(config.ckpt_path).stem if config.ckpt_path else "no-checkpoint"
        path = self.run_dir / "evaluations" / f"{stage}-{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(evaluation, indent=2) + "\n")
        return evaluation

    def after_fit(self) -> None:
        self._report("fit")

    def after_validate(self) -> None:
        self._report("validate")

    def after_test(self) -> None:
        self._report("test")

    def before_predict(self) -> None:
        # The masks go to files as they come; the probabilities need not pile up in memory
        # (a CamVid test split's would take gigabytes).
        config = self.config_init[self.subcommand]
        if config.get("return_predictions") is None:
            config["return_predictions"] = False

    @rank_zero_only
    def after_predict(self) -> None:
        print(self.mask_writer.summary())


def run_cli(argv: list[str], callbacks: Sequence[Callback] = ()) -> SegmentationCLI:
    """Run ``fit`` / ``validate`` / ``test`` / ``predict`` as the command line does and return
    the CLI, whose ``trainer``, ``model`` and ``datamodule`` a notebook or a test can inspect.
    ``callbacks`` join the configured ones (objects that YAML cannot describe). Errors in the
    configuration or the data raise (``main`` prints them as one line)."""
    quiet_libraries()
    argv = with_checkpoint_config(expand_experiment(list(argv)))
    # LightningCLI reads sys.argv itself: give it the expanded arguments. The program stays
    # the one that runs (the `lightning-seg` script, or the user's): Lightning's DDP launcher
    # starts the other processes by running sys.argv[0] again.
    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        return SegmentationCLI(extra_callbacks=callbacks)
    finally:
        sys.argv = saved


def flag(name: str, value: Any) -> str:
    """``--name=value``: strings as they are, anything else as JSON (which the CLI reads)."""
    return f"--{name}={value if isinstance(value, str) else json.dumps(value)}"


def as_flags(settings: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"trainer": {"max_epochs": 3}}`` -> ``["--trainer.max_epochs=3"]`` (values as JSON)."""
    flags = []
    for key, value in settings.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and not name.endswith(("model_args", "init_args")):
            flags += as_flags(value, name)
        else:
            flags.append(flag(name, value))
    return flags


def train(experiment: str = "quickstart", *flags: str, **settings: Any) -> SegmentationCLI:
    """Train from Python exactly as ``make train`` does (run folder, checkpoints, W&B):
    ``train("unet_bce", trainer={"max_epochs": 3}, data={"init_args": {"batch_size": 4}})``.
    Returns the CLI: ``.trainer``, ``.model``, ``.datamodule`` and ``.summary.summary``."""
    return run_cli(["fit", f"--experiment={experiment}", *flags, *as_flags(settings)])
