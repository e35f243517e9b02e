"""The two loops tlframe is measured against: the plain PyTorch loop a researcher would write,
and the same step in a bare LightningModule under a Trainer with everything optional off
(Lightning's own floor). Both build the model, optimiser and schedule as tlframe does and
draw the same batches; ``StepTimer`` times tlframe's side and the bare one alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from tlframe.engine.module import to_channels_last
from tlframe.engine.stages import build_module, domain_infos, plan_stages
from tlframe.models.layers import reverse_gradient
from tlframe.models.schedules import dann_lambda
from tlframe.tools.bench_device import Placement, lightning_placement, synchronize


class StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch, the
    device's queued work included."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.start, self.seconds = warmup, steps, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.steps - 1:
            synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self.start


def channels_last(cfg) -> bool:
    """Whether the composed config trains in NHWC (``performance.channels_last``)."""
    return bool((cfg.get("performance") or {}).get("channels_last", False))


@dataclass
class PlainParts:
    """The plain loop's pieces, shared by the plain loop and the bare Lightning module so the
    two differ only in who drives the steps: the model, optimiser and schedule built as
    tlframe builds them, batches drawn at random from the in-memory splits, and the loss."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    placement: Placement
    draw: Callable[[], tuple]
    loss: Callable[[tuple, int], torch.Tensor]
    images_per_step: int


def plain_parts(cfg, domains, steps: int, adversarial: bool) -> PlainParts:
    """It follows the composed config as tlframe does: the batch size (``data.batch_size``),
    NHWC weights and batches with ``performance.channels_last``, the compiled backbone with
    ``performance.compile`` (both applied to the model by the shared builder, in place), and
    the device and autocast precision Lightning picks for ``trainer`` (batches drawn on the
    CPU and moved there, as tlframe's are)."""
    spec = plan_stages(cfg)[0]
    placement = lightning_placement(spec.trainer)
    device = placement.device
    module = build_module(cfg, spec, domain_infos(domains), None).to(device)
    backbone, head = module.model.backbone, module.model.head
    alignment = getattr(module.objectives, "alignment", None)  # DANN's, with a discriminator
    discriminator = getattr(alignment, "domain_classifier", None)
    module.train()
    optimizer = instantiate(spec.optimizer)(params=list(module.parameters()))
    scheduler = instantiate(spec.scheduler)(optimizer=optimizer, total_steps=steps)
    source, target = domains["source"].train, domains["target"].train
    batch = cfg.data.batch_size
    nhwc = channels_last(cfg)
    domain_labels = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(device)

    def sample(split) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = split[torch.randint(len(split), (batch,))]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return (to_channels_last(x) if nhwc else x), y

    def draw() -> tuple:
        return (*sample(source), *(sample(target) if adversarial else ()))

    def loss(drawn: tuple, step: int) -> torch.Tensor:
        x_s, y_s = drawn[:2]
        if not adversarial:
            return F.cross_entropy(head(backbone(x_s)), y_s)
        features = backbone(torch.cat([x_s, drawn[2]]))
        logits = head(features[:batch])
        scores = discriminator(reverse_gradient(features, dann_lambda(step / steps)))
        return F.cross_entropy(logits, y_s) + F.binary_cross_entropy_with_logits(
            scores.squeeze(1), domain_labels
        )

    images = batch * (2 if adversarial else 1)
    return PlainParts(module, optimizer, scheduler, placement, draw, loss, images)


def plain_rate(cfg, domains, steps: int, warmup: int, adversarial: bool) -> float:
    """The same training written as the plain loop a researcher would write."""
    parts = plain_parts(cfg, domains, steps, adversarial)
    device, scaler = parts.placement.device, parts.placement.grad_scaler()
    start = 0.0
    for step in range(steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        drawn = parts.draw()
        with parts.placement.autocast():
            loss = parts.loss(drawn, step)
        parts.optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(parts.optimizer)
        scaler.update()
        parts.scheduler.step()
    synchronize(device)
    return (steps - warmup) * parts.images_per_step / (time.perf_counter() - start)


class DrawnBatches(torch.utils.data.IterableDataset):
    """``steps`` batches drawn as the plain loop draws them, for Lightning's loader."""

    def __init__(self, draw: Callable[[], tuple], steps: int):
        self.draw, self.steps = draw, steps

    def __iter__(self):
        return (self.draw() for _ in range(self.steps))


class BareModule(pl.LightningModule):
    """The plain loop's step and nothing else, driven by Lightning: no callbacks, logger,
    metrics, checkpointing or progress bar. What Lightning's loop costs by itself."""

    def __init__(self, parts: PlainParts):
        super().__init__()
        self.inner, self.parts = parts.module, parts

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return self.parts.loss(batch, batch_idx)

    def configure_optimizers(self) -> dict:
        schedule = {"scheduler": self.parts.scheduler, "interval": "step"}
        return {"optimizer": self.parts.optimizer, "lr_scheduler": schedule}


def bare_lightning_rate(cfg, domains, steps: int, warmup: int, adversarial: bool) -> float:
    """Images per second of ``BareModule`` under a Trainer with everything optional off,
    on the device and precision of tlframe's: the floor Lightning's loop sets."""
    parts = plain_parts(cfg, domains, steps, adversarial)
    trainer_cfg = plan_stages(cfg)[0].trainer
    timer = StepTimer(warmup, steps)
    trainer = pl.Trainer(
        accelerator=trainer_cfg.accelerator,
        devices=1,
        precision=trainer_cfg.precision,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    loader = DataLoader(DrawnBatches(parts.draw, steps), batch_size=None)
    trainer.fit(BareModule(parts), train_dataloaders=loader)
    return (steps - warmup) * parts.images_per_step / timer.seconds
