"""BI-DiffSR training: one stage, ``diffusion`` (the official ``BIDiffSRModel``).

t ~ U{0..T-1} per sample, eps ~ N(0, I), x_t = sqrt(abar_t) HR + sqrt(1 - abar_t) eps (HR in
[0, 1]), loss L1(UNet(x_t, bicubic_s(LR), t), eps). Randomness comes from the global torch RNG
(the trainer reseeds it every iteration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...diffusion.sampling import q_sample
from ...methods.bidiffsr.model import BIDiffSR, BIDiffSRConfig
from ...resize import imresize
from ...upscaler import UpscaleOptions, upscale_tensor
from ..checkpoints import Weights, substate
from ..stages import Export, Stage
from ..trainer import TrainConfig


@dataclass(frozen=True)
class BIDiffSRRecipe:
    model: BIDiffSRConfig = field(default_factory=BIDiffSRConfig)
    diffusion: TrainConfig = field(default_factory=TrainConfig)
    val_sampling_steps: int = 50  # DDIM steps of the periodic validation


Recipe = BIDiffSRRecipe


class DiffusionStage(nn.Module):
    """eps-prediction with an L1 loss; validation samples with ``val_sampling_steps`` steps."""

    def __init__(self, cfg: BIDiffSRConfig, val_sampling_steps: int):
        super().__init__()
        self.model = BIDiffSR(cfg)
        self.val_options = UpscaleOptions(sampling_steps=val_sampling_steps)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return upscale_tensor(self.model, lr, self.val_options)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        abar = self.model.abar
        cond = imresize(lr, self.model.scale)
        t = torch.randint(len(abar), (hr.shape[0],), device=hr.device)
        eps = torch.randn_like(hr)
        eps_hat = self.model.predict_eps(q_sample(hr, abar[t], eps), t, cond)
        return F.l1_loss(eps_hat, eps), {}


def diffusion_stage(recipe: BIDiffSRRecipe, weights: Mapping[str, Weights]) -> DiffusionStage:
    del weights
    return DiffusionStage(recipe.model, recipe.val_sampling_steps)


def export(recipe: BIDiffSRRecipe, weights: Mapping[str, Weights]) -> BIDiffSR:
    """The shipped model: the stage's EMA weights with every binary conv packed into bits."""
    model = BIDiffSR(recipe.model)
    model.load_state_dict(substate(weights["diffusion"], "model."))
    model.fuse()
    return model


STAGES = (Stage("diffusion", diffusion_stage),)
EXPORT = Export(export, needs=("diffusion",))
