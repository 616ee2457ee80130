"""SegmentationTask: one LightningModule for binary and multiclass segmentation.

The task owns the network, the loss, the metrics and the optimisation; it never reads files and
knows nothing specific to a network. ``__init__`` calls small ``configure_*`` hooks (as torchgeo
does) so a subclass can swap one piece without rewriting the rest.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics import MetricCollection

from lightning_seg.callbacks import ThresholdTuner
from lightning_seg.choices import TTA
from lightning_seg.data.datasets import sample_seed
from lightning_seg.errors import ConfigurationError
from lightning_seg.losses import LossSpec, build_loss
from lightning_seg.metrics import ImageCounts, IoUInterval, build_metrics
from lightning_seg.models import MODELS, AuxiliaryOutput, build_model
from lightning_seg.postprocess import Postprocess, postprocess_labels
from lightning_seg.tta import activate, view_averaged

ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]
Scheduler = Literal["cosine", "onecycle", "constant"]


class SegmentationTask(LightningModule):
    """Train, validate, test and predict a segmentation network.

    Args:
        model: registered network name (``lightning-seg models`` lists them).
        model_args: keyword arguments of that network (depth, widths, encoder, ...).
        loss: loss spec: ``"bce"``, ``"bce+dice"`` or a list of ``{name, weight, ...}``.
        optimizer: optimizer class and arguments; AdamW by default.
        lr_scheduler: ``cosine`` decay or ``onecycle`` over all training steps, or ``constant``.
        encoder_lr_scale: learning rate of the network's ``encoder`` as a fraction of the
            rest's (the scheduler scales both alike). Below 1 a pretrained encoder is
            fine-tuned gently while the freshly initialised decoder learns at the full rate.
        freeze_encoder_bn: keep the pretrained encoder's batch-norm layers in eval mode while
            training (mmsegmentation's ``norm_eval``): they normalise with the statistics the
            encoder was pretrained with and never update them; their scale and shift still
            train. Batches of a few images give noisy statistics: on PH2 (Lite2 FPN, batch 4)
            the best epoch's val IoU went from 0.911 to 0.928.
        in_channels, num_classes, ignore_index, class_names: set from the datamodule by the CLI;
            ``num_classes=1`` means binary segmentation with one logit.
        class_weights: per-class weights for a loss with ``class_weights: median_frequency``;
            the CLI links them from the datamodule's median-frequency statistics.
        threshold: probability above which a binary pixel is foreground.
        tune_threshold: at the end of ``fit``, choose the binary threshold that maximises the
            validation IoU of the best checkpoint and store it in the checkpoints, so that
            ``test`` and ``predict`` use it.
        channels_last: keep the network and batches in channels-last memory format, which
            oneDNN (CPU) and tensor cores (GPU) run faster (10-35 % per step on CPU here).
        compile: ``torch.compile`` the network (in place, so checkpoints keep their keys).
        tta: test-time views for ``test``, the ``validate`` command and the threshold tuning
            (so all see the probabilities ``predict`` averages), not the validation of every
            epoch: ``none``, ``hflip``, ``vflip``, ``flips`` (all four), ``d4`` (the flips and
            their transposes: all eight right-angle symmetries) or ``flips_scales`` (the flips
            at 7/8, 1 and 9/8 of the input size).
        postprocess: ``largest_component`` keeps the largest foreground region of each binary
            prediction and fills its holes (one object per image); validation, ``test`` and
            ``predict`` all apply it. ``none`` by default.
    """

    def __init__(
        self,
        model: ModelName = "unet",
        model_args: dict[str, Any] | None = None,
        loss: LossSpec = "bce",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Scheduler = "cosine",
        encoder_lr_scale: float = 1.0,
        freeze_encoder_bn: bool = False,
        in_channels: int = 3,
        num_classes: int = 1,
        ignore_index: int | None = None,
        class_names: list[str] | None = None,
        class_weights: list[float] | None = None,
        threshold: float = 0.5,
        tune_threshold: bool = False,
        channels_last: bool = True,
        compile: bool = False,
        tta: TTA = "none",
        postprocess: Postprocess = "none",
    ) -> None:
        super().__init__()
        if not encoder_lr_scale > 0:
            raise ConfigurationError(
                f"model.encoder_lr_scale={encoder_lr_scale}: must be > 0 (1 trains the encoder "
                "at the same learning rate as the rest)"
            )
        if postprocess != "none" and num_classes != 1:
            raise ConfigurationError(
                f"model.postprocess={postprocess} needs binary segmentation (num_classes=1), "
                f"not {num_classes} classes"
            )
        # logger=False: the CLI logs the whole resolved config once, under flat keys
        # (model.loss, data.image_size); Lightning's own copy would repeat it unprefixed.
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.optimizer_factory = optimizer
        # Set by Lightning's LearningRateFinder callback (--trainer.callbacks+=LearningRateFinder);
        # None keeps the optimizer's configured learning rate.
        self.lr: float | None = None
        # The names of the training images (set by fit, kept in checkpoints): a test split
        # that shares any is not held out, and `test` says so.
        self.trained_on: list[str] | None = None
        self.chosen_on: list[str] | None = None  # the images that chose epoch and threshold
        # Each scored image's counts from the last ``validate`` command or ``test``, by split
        # ("val", "test"): the CLI writes them beside the scores.
        self.image_counts: dict[str, ImageCounts | None] = {}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # ----------------------------------------------------------------- configure hooks
    @property
    def mode(self) -> Literal["binary", "multiclass"]:
        return "binary" if self.hparams["num_classes"] == 1 else "multiclass"

    def configure_models(self) -> None:
        hp = self.hparams
        self.network = build_model(
            hp["model"], hp["in_channels"], hp["num_classes"], **(hp["model_args"] or {})
        )
        if hp["channels_last"]:
            self.network = self.network.to(memory_format=torch.channels_last)
        if hp.get("compile"):
            self.network.compile()
        scale = hp.get("encoder_lr_scale", 1.0)
        if scale != 1.0 and not isinstance(getattr(self.network, "encoder", None), torch.nn.Module):
            # Here, not when the optimizer is built: a fit fails before it sets up any data.
            raise ConfigurationError(
                f"model.encoder_lr_scale={scale} needs a network with an encoder; "
                f"{hp['model']} has none"
            )

        if hp.get("freeze_encoder_bn") and self.pretrained_encoder is None:
            raise ConfigurationError(
                f"model.freeze_encoder_bn needs a pretrained encoder; {hp['model']} "
                f"{hp['model_args'] or {}} has none (its batch-norm statistics would stay at "
                "their initial 0 and 1): set model.freeze_encoder_bn=false"
            )

    @property
    def pretrained_encoder(self) -> torch.nn.Module | None:
        """The network's encoder that holds pretrained weights, if any."""
        return getattr(self.network, "pretrained_encoder", None)

    def train(self, mode: bool = True) -> SegmentationTask:
        """Training mode, with the pretrained encoder's batch norms kept in eval mode when
        ``freeze_encoder_bn`` says so (Lightning restores these modes after each validation)."""
        super().train(mode)
        encoder = self.pretrained_encoder
        if mode and encoder is not None and self.hparams.get("freeze_encoder_bn"):
            for module in encoder.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def configure_losses(self) -> None:
        hp = self.hparams
        self.criterion = build_loss(hp["loss"], self.mode, hp["ignore_index"])
        for module in self.criterion.modules():
            if getattr(module, "needs_class_weights", False):
                if hp.get("class_weights") is None:
                    raise ConfigurationError(
                        "class_weights: median_frequency needs the weights of the training "
                        "masks, which a multiclass datamodule of files gives (the CLI links "
                        "data.class_weights to model.class_weights); give a list of weights "
                        "instead"
                    )
                module.set_class_weights(list(hp["class_weights"]))

    def configure_metrics(self) -> None:
        hp = self.hparams
        labels = (hp["num_classes"], hp["ignore_index"], hp["class_names"])
        self.val_metrics = build_metrics(*labels).clone(prefix="val/")
        # An evaluation (``test``, the ``validate`` command) comes with its bootstrap interval,
        # the error bar of a small split, and each image's counts; validation inside ``fit``,
        # every epoch, needs neither.
        self.validate_metrics = build_metrics(*labels, interval=True).clone(prefix="val/")
        self.test_metrics = build_metrics(*labels, interval=True).clone(prefix="test/")

    def _fitting(self) -> bool:
        return self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING

    def evaluation_metrics(self, stage: str) -> MetricCollection:
        """The metrics that score ``stage`` ("val" or "test") in what the trainer is doing."""
        if stage == "test":
            return self.test_metrics
        return self.val_metrics if self._fitting() else self.validate_metrics

    def configure_callbacks(self) -> list[Callback]:
        if self.hparams["tune_threshold"] and self.mode == "binary":
            return [ThresholdTuner()]
        return []

    @property
    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) the network's pretrained encoder was trained with; None: no preference."""
        return getattr(self.network, "input_normalization", None)

    @property
    def needs_weight_map(self) -> bool:
        """Whether the loss needs the U-Net weight map in each batch (``weight``)."""
        return any(getattr(m, "needs_weight_map", False) for m in self.criterion.modules())

    # ----------------------------------------------------------------- forward and steps
    def run_network(self, images: Tensor) -> Tensor | AuxiliaryOutput:
        """The network's raw output: logits, or AuxiliaryOutput in training mode."""
        if self.hparams["channels_last"] and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.network(images)

    def forward(self, images: Tensor) -> Tensor:
        """Logits N x C x H x W (the main head only, also in training mode)."""
        output = self.run_network(images)
        return output.logits if isinstance(output, AuxiliaryOutput) else output

    def probabilities(
        self, images: Tensor, tta: str | None = None, logits: Tensor | None = None
    ) -> Tensor:
        """Probabilities N x C x H x W, averaged over the test-time views (``hparams.tta``);
        ``logits`` of ``images`` as they are, if already computed, spare one forward pass."""
        views = tta or self.hparams.get("tta", "none")
        return view_averaged(self, images, views, self.mode == "binary", logits)

    def predict_labels(self, logits: Tensor) -> Tensor:
        """Hard labels N x H x W: thresholded probability (binary) or argmax (multiclass)."""
        return self.labels_from_probabilities(activate(logits, self.mode == "binary"))

    def labels_from_probabilities(self, probs: Tensor) -> Tensor:
        """Hard labels from N x C x H x W probabilities (the threshold and the post-processing,
        or the argmax)."""
        if self.mode == "binary":
            labels = (probs[:, 0] > self.hparams["threshold"]).long()
            return postprocess_labels(labels, self.hparams.get("postprocess", "none"))
        return probs.argmax(dim=1)

    def compute_loss(self, output: Tensor | AuxiliaryOutput, batch: dict[str, Tensor]) -> Tensor:
        """Loss of the main head plus the weighted losses of any auxiliary heads."""
        mask, weight = batch["mask"], batch.get("weight")
        if not isinstance(output, AuxiliaryOutput):
            return self.criterion(output, mask, weight)
        loss = self.criterion(output.logits, mask, weight)
        for aux_logits, aux_weight in output.auxiliary:
            if aux_logits.shape[-2:] != mask.shape[-2:]:
                aux_logits = F.interpolate(
                    aux_logits, size=mask.shape[-2:], mode="bilinear", align_corners=False
                )
            loss = loss + aux_weight * self.criterion(aux_logits, mask, weight)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.compute_loss(self.run_network(batch["image"]), batch)
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,  # the epoch mean over every process's batches, not rank 0's
            batch_size=len(batch["image"]),
        )
        return loss

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["image"])
        loss = self.compute_loss(logits, batch)
        metrics = self.evaluation_metrics(stage)
        if self.scores_test_time_views(stage):
            probs = self.probabilities(batch["image"], logits=logits)
            labels = self.labels_from_probabilities(probs)
        else:
            labels = self.predict_labels(logits)
        metrics.update(labels, batch["mask"], index=batch.get("index"))
        batch_size = len(batch["image"])
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=batch_size)
        return logits

    def scores_test_time_views(self, stage: str) -> bool:
        """Whether this evaluation averages the ``tta`` views, as ``predict`` does: ``test`` and
        the ``validate`` command do, so a checkpoint's val score is measured as its test score
        is; the validation inside ``fit`` runs every epoch and keeps to one view."""
        if self.hparams.get("tta", "none") == "none":
            return False
        return stage == "test" or not self._fitting()

    def _log_metrics(self, metrics: MetricCollection) -> None:
        # compute() synchronises the accumulated counts across processes, so the values are the
        # same on every rank; sync_dist=True averages equal values (a no-op) and keeps Lightning
        # from warning a DDP user that they are unsynchronised.
        values = metrics.compute()
        metrics.reset()
        for name, value in values.items():
            self.log(name, value, prog_bar=name.endswith(("/iou", "/f1")), sync_dist=True)

    def _end_evaluation(self, stage: str) -> None:
        metrics = self.evaluation_metrics(stage)
        self._log_metrics(metrics)
        # Every image's counts, gathered from all processes by the interval's compute: the CLI
        # writes them beside the scores (a per-image report, paired comparisons).
        self.image_counts[stage] = next(
            (m.image_counts for m in metrics.values() if isinstance(m, IoUInterval)), None
        )

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Probabilities N x C x H x W as ``test`` sees them (its test-time views);
        :meth:`labels_from_probabilities` turns them into its labels (threshold and
        post-processing), at this size or after resizing them to the image's own."""
        return self.probabilities(batch["image"])

    # ----------------------------------------------------------------- optimisation
    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: the encoder's, scaled by ``encoder_lr_scale``, and
        the rest. One group when the scale is 1, so optimizers see what they always saw."""
        scale = float(self.hparams.get("encoder_lr_scale", 1.0))
        if scale == 1.0:
            return [{"params": list(self.parameters()), "lr_scale": 1.0}]
        encoder = self.network.encoder  # configure_models checked that there is one
        in_encoder = {id(p) for p in encoder.parameters()}
        rest = [p for p in self.parameters() if id(p) not in in_encoder]
        return [
            {"params": list(encoder.parameters()), "lr_scale": scale},
            {"params": rest, "lr_scale": 1.0},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            base_lr = self.lr if self.lr is not None else group["lr"]
            group["lr"] = base_lr * group.get("lr_scale", 1.0)
        kind = self.hparams["lr_scheduler"]
        if kind == "constant":
            return optimizer
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        if kind == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        else:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=[group["lr"] for group in optimizer.param_groups],
                total_steps=total_steps,
            )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Prediction on new images must prepare them as training did: keep how, with the weights.
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "inference_settings"):
            checkpoint["lightning_seg"] = datamodule.inference_settings()
            if self.trained_on is not None:
                # The images it learned from, so `test` can tell whether its score is held out.
                checkpoint["lightning_seg"]["trained_on"] = self.trained_on
            if self.chosen_on is not None:
                # And those that chose its epoch and threshold: no held-out score either.
                checkpoint["lightning_seg"]["chosen_on"] = self.chosen_on

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        settings = checkpoint.get("lightning_seg") or {}
        self.trained_on, self.chosen_on = settings.get("trained_on"), settings.get("chosen_on")

    def on_fit_start(self) -> None:
        self._base_seed = torch.initial_seed()  # seed_everything's, also when resuming
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "sample_names"):
            self.trained_on = datamodule.sample_names("train")
            self.chosen_on = datamodule.sample_names("val")

    def on_train_epoch_start(self) -> None:
        # Torch's own randomness (dropout) restarts from (seed, epoch) every epoch, so a run
        # resumed from a checkpoint draws what an uninterrupted one would.
        torch.manual_seed(
            sample_seed(getattr(self, "_base_seed", 0), self.current_epoch, 2**31 - 2)
        )

    def on_train_start(self) -> None:
        if self.hparams.get("freeze_encoder_bn"):
            # Lightning never calls train() on the module itself (it saves and restores the
            # modes around validation): apply the frozen batch norms from the first step.
            self.train()
        # A resumed run restores the scheduler with the old total; when max_epochs grew, stretch
        # the schedule over the new total instead of running off its end.
        total_steps = int(self.trainer.estimated_stepping_batches)
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
                scheduler.total_steps = max(scheduler.total_steps, total_steps)
            elif isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                scheduler.T_max = max(scheduler.T_max, total_steps)
