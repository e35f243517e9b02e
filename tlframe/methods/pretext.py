"""Pretext tasks that train a backbone without labels (self-taught learning).

Each is an objective (``tlframe.engine.objective``): called on a training step it returns
``<name>_<domain>`` for every domain of the batch, which must carry no labels; its
``loss(backbone, x, generator)`` is also what the pretraining stage validates on. Its own
parts (a decoder, a projection head) stay with the pretraining stage; only the backbone
is handed on. Choose one with ``method/pretext=<name>`` (self_taught,
self_taught_clustering); its options are ``method.pretext.<option>``.

- ``Autoencoder``: a denoising and/or sparse autoencoder (Raina et al. 2007; Vincent et
  al. 2008): reconstruct the clean input from the features of a corrupted one.
- ``Contrastive``: SimCLR's NT-Xent (Chen et al. 2020): two random views of each image
  must find each other among the batch's views.
- ``Rotation``: RotNet (Gidaris et al. 2018): tell which of four rotations an image was
  given, which takes the shape of the object: a cue that textured backgrounds shared by
  both contrastive views do not offer a shortcut around.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlframe.engine.context import StageContext
from tlframe.engine.method import Choice
from tlframe.engine.model import TransferModel
from tlframe.engine.objective import Objective, StepOutputs
from tlframe.errors import ConfigError
from tlframe.models.augment import Augment, generator_device


class Pretext(Objective):
    """A label-free objective on the backbone: ``loss(backbone, x, generator)`` per batch."""

    def forward(self, out: StepOutputs, progress: float) -> dict[str, Tensor]:
        losses = {}
        for role in out.roles:
            if out.y(role) is not None:  # the data module's contract for label regime "none"
                raise RuntimeError(f"{role} labels reached the label-free stage")
            for name, value in self.loss(out.model.backbone, out.x(role)).items():
                losses[f"{name}_{role}"] = value
        return losses

    def loss(
        self, backbone: nn.Module, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError


class Autoencoder(Pretext):
    """Decoder from the backbone's features back to the input; loss = mean squared error.

    ``noise`` (Gaussian, normalised units) and ``mask`` (fraction of pixels set to the
    image's darkest value) corrupt the input (denoising); ``sparsity`` weighs an L1 penalty
    on the features (sparse coding); both 0 is a plain autoencoder.
    """

    def __init__(
        self,
        *,
        model: TransferModel,
        context: StageContext,
        hidden_dim: int = 512,
        noise: float = 0.3,
        mask: float = 0.25,
        sparsity: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= mask < 1.0 or noise < 0 or sparsity < 0:
            raise ConfigError(
                "autoencoder needs 0 <= mask < 1, noise >= 0 and sparsity >= 0, got "
                f"mask={mask}, noise={noise}, sparsity={sparsity}"
            )
        self.input_shape = tuple(context.task.input_shape)
        self.decoder = nn.Sequential(
            nn.Linear(model.out_features, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, math.prod(self.input_shape)),
        )
        self.noise, self.mask, self.sparsity = noise, mask, sparsity

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        device = generator_device(generator)
        noise = torch.randn(x.shape, generator=generator, device=device).to(x.device)
        dropped = torch.rand(x.shape, generator=generator, device=device).to(x.device) < self.mask
        floor = x.amin(dim=(1, 2, 3), keepdim=True) if x.dim() == 4 else x.amin()
        return torch.where(dropped, floor.expand_as(x), x + self.noise * noise)

    def loss(
        self, backbone: nn.Module, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        features = backbone(self.corrupt(x, generator))
        reconstruction = self.decoder(features).view(len(x), *self.input_shape)
        losses = {"reconstruction": F.mse_loss(reconstruction, x)}
        if self.sparsity:
            losses["sparsity"] = self.sparsity * features.abs().mean()
        return losses


class Contrastive(Pretext):
    """NT-Xent over two augmented views per image, through a two-layer projection head
    (the backbone's features, before the head, are what later stages use)."""

    def __init__(
        self,
        *,
        model: TransferModel,
        context: StageContext | None = None,
        projection_dim: int = 128,
        temperature: float = 0.2,
        augment: Augment = Augment(),
    ):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"contrastive temperature must be positive, got {temperature}")
        width = model.out_features
        self.projection = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection_dim)
        )
        self.temperature = temperature
        self.augment = augment if isinstance(augment, Augment) else Augment(**augment)

    def loss(
        self, backbone: nn.Module, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        views = torch.cat([self.augment(x, generator), self.augment(x, generator)])
        z = F.normalize(self.projection(backbone(views)), dim=1)
        return {"contrastive": nt_xent(z, self.temperature)}


class Rotation(Pretext):
    """Each image in its four rotations (0, 90, 180, 270 degrees); a linear classifier on
    the backbone's features must name the rotation. Needs square images."""

    ROTATIONS = 4

    def __init__(self, *, model: TransferModel, context: StageContext):
        super().__init__()
        input_shape = context.task.input_shape
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise ConfigError(
                f"the rotation objective needs square images (C, H, H), got shape "
                f"{tuple(input_shape)}; use method/pretext=autoencoder for other inputs"
            )
        self.classifier = nn.Linear(model.out_features, self.ROTATIONS)

    def loss(
        self, backbone: nn.Module, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(self.ROTATIONS)])
        labels = torch.arange(self.ROTATIONS, device=x.device).repeat_interleave(len(x))
        return {"rotation": F.cross_entropy(self.classifier(backbone(rotated)), labels)}


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss for unit vectors ``z`` = [views 1; views 2]: row i's positive is its
    other view, every other row of the 2N is a negative."""
    n = len(z) // 2
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives)


PRETEXT = Choice(
    {"contrastive": Contrastive, "rotation": Rotation, "autoencoder": Autoencoder}, "contrastive"
)
