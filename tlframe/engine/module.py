"""The one LightningModule every method runs on.

The engine owns what all methods share: the optimiser and its per-step schedule from
``_partial_`` configs, the training step (the objectives' loss terms, summed, checked for
NaN, logged on the steps Lightning writes), evaluation through the stage's evaluator, the
training progress that schedules read, and channels-last batches. A method supplies parts
and never undoes them: a model (``tlframe.engine.model``), objectives
(``tlframe.engine.objective``) and an evaluator (``tlframe.engine.evaluation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.evaluation import Evaluator
from tlframe.engine.log_steps import logs_this_step
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import TlframeError


class NonFiniteLossError(TlframeError):
    """Raised when a loss term becomes NaN or infinite."""


class Engine(pl.LightningModule):
    """Trains ``model`` on the sum of its ``objectives`` and evaluates it with
    ``evaluator``, for the stage described by ``context``."""

    def __init__(
        self,
        model: TransferModel,
        objectives: Mapping[str, Objective],
        evaluator: Evaluator,
        optimizer: Callable[..., torch.optim.Optimizer],
        context: StageContext,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        self.model = model
        self.objectives = nn.ModuleDict(objectives)
        self.evaluator = evaluator
        self.context = context
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.joint = any(o.joint for o in self.objectives.values())

    def parts(self) -> dict[str, nn.Module]:
        """What the next stage receives: the model's parts."""
        return self.model.parts()

    def forward(self, x: Tensor) -> Tensor:
        return self.model.logits(x, self.context.task_role)

    # -------------------------------------------------------------- training
    def losses(self, batch: Mapping[str, tuple]) -> dict[str, Tensor]:
        """Every objective's named loss terms on a training batch, in objective order."""
        out = StepOutputs(self.model, batch, joint=self.joint)
        losses: dict[str, Tensor] = {}
        for objective in self.objectives.values():
            losses.update(objective(out, self.progress))
        return losses

    def training_step(self, batch: Mapping[str, tuple], batch_idx: int) -> Tensor:
        losses = self.losses(batch)
        if not losses:
            raise TlframeError(
                "this stage has no labeled data to learn from; check data.target_labels"
            )
        loss = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(loss):  # one check (one device sync) for all the terms
            self._raise_non_finite(losses, loss)
        if self.logs_this_step():
            self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()})
            for objective in self.objectives.values():
                scalars = objective.scalars(self.progress)
                self.log_dict({f"train/{k}": v for k, v in scalars.items()})
            self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    def logs_this_step(self) -> bool:
        """Whether this training step's values reach the loggers (every
        ``trainer.log_every_n_steps`` steps): only then are they logged, since each
        ``self.log`` costs a fixed ~0.6 ms (``tlframe.engine.log_steps``)."""
        return logs_this_step(self._trainer)

    def _raise_non_finite(self, losses: Mapping[str, Tensor], total: Tensor) -> None:
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"loss term {name!r} became {value.item()} at step {self.global_step}; "
                    "lower the learning rate or the loss weight"
                )
        raise NonFiniteLossError(  # finite terms whose sum overflowed
            f"the total loss became {total.item()} at step {self.global_step}; "
            "lower the learning rate or the loss weights"
        )

    @property
    def progress(self) -> float:
        """Training progress p in [0, 1], for schedules such as DANN's lambda."""
        total = self.trainer.estimated_stepping_batches if self._trainer else 0
        return min(self.global_step / total, 1.0) if total else 0.0

    def on_train_start(self) -> None:
        self.model.on_train_start()
        for objective in self.objectives.values():
            objective.on_train_start(self)

    def on_train_epoch_start(self) -> None:
        for objective in self.objectives.values():
            objective.on_train_epoch_start(self)

    def configure_callbacks(self) -> list[pl.Callback]:
        # Only fitting needs them (Lightning asks again for trainer.test, and would report
        # the fit-time instances as overridden).
        if self.trainer.state.fn != "fit":
            return []
        return self.model.callbacks(self.trainer)

    # ------------------------------------------------------------ evaluation
    def validation_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluator.evaluate(self, batch, batch_idx)

    def test_step(self, batch: Mapping, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluator.evaluate(self, batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.evaluator.finish(self, testing=False)

    def on_test_epoch_end(self) -> None:
        self.evaluator.finish(self, testing=True)

    # ------------------------------------------------------------- optimiser
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The model's trainable parameters, then the objectives' (a domain classifier)."""
        own = [p for objective in self.objectives.values() for p in objective.parameters()]
        return self.model.trainable_parameters() + [p for p in own if p.requires_grad]

    def configure_optimizers(self):
        params = self.trainable_parameters()
        optimizer = self.optimizer_factory(params=params or list(self.parameters()))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -------------------------------------------------------------- devices
    def use_channels_last(self) -> None:
        """NHWC weights and image batches: faster convolutions on recent CPUs and GPUs."""
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not getattr(self, "channels_last", False):
            return batch
        if "x" in batch:  # an evaluation batch
            return {**batch, "x": to_channels_last(batch["x"])}
        return {role: (to_channels_last(x), y) for role, (x, y) in batch.items()}


def to_channels_last(x: Tensor) -> Tensor:
    """An image batch in NHWC memory order; other tensors as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
