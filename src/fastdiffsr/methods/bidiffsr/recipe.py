"""BI-DiffSR training: one stage, ``diffusion`` (the official ``BIDiffSRModel``).

t ~ U{0..T-1} per sample, eps ~ N(0, I), x_t = sqrt(abar_t) HR + sqrt(1 - abar_t) eps (HR in
[0, 1]), loss L1(UNet(x_t, bicubic_s(LR), t), eps). Randomness comes from the global torch RNG
(the trainer reseeds it every step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ...diffusion.sampling import q_sample
from ...resize import imresize
from ...tiling import pad_to_requirements, tiled_apply
from ...train.trainer import TrainConfig, stage_weights
from ..rdsr.recipe import substate
from .model import BIDiffSR, BIDiffSRConfig

STAGES = ("diffusion",)
ABLATION_STAGES: tuple[str, ...] = ()


@dataclass(frozen=True)
class BIDiffSRRecipe:
    model: BIDiffSRConfig = field(default_factory=BIDiffSRConfig)
    diffusion: TrainConfig = field(default_factory=TrainConfig)
    val_steps: int = 50  # DDIM steps of the periodic validation


class DiffusionStage(nn.Module):
    """eps-prediction with an L1 loss; validation samples with ``val_steps`` DDIM steps."""

    def __init__(self, cfg: BIDiffSRConfig, val_steps: int):
        super().__init__()
        self.model, self.val_steps = BIDiffSR(cfg), val_steps

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        """LR of any size: padded to the grid, tiled as inference (seed 0), cropped."""
        del hr
        m, (h, w) = self.model, lr.shape[-2:]
        x = pad_to_requirements(lr, m.multiple_of, m.minimum)
        tiles_of = torch.cat([x, m.tile_noise(x)], dim=1)
        y = tiled_apply(m.prepare(x, self.val_steps), tiles_of, m.max_tile, m.tile_overlap,
                        m.scale)
        return y[..., : h * m.scale, : w * m.scale]

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        abar = self.model.abar
        cond = imresize(lr, self.model.scale)
        t = torch.randint(len(abar), (hr.shape[0],), device=hr.device)
        eps = torch.randn_like(hr)
        eps_hat = self.model.predict_eps(q_sample(hr, abar[t], eps), t, cond)
        return F.l1_loss(eps_hat, eps), {}


def build_stage(recipe: BIDiffSRRecipe, stage: str, out: Path) -> nn.Module:
    del out
    if stage != "diffusion":
        raise ValueError(f"unknown BI-DiffSR stage {stage!r}; stages: {STAGES}")
    return DiffusionStage(recipe.model, recipe.val_steps)


def export(recipe: BIDiffSRRecipe, out: Path) -> BIDiffSR:
    """The shipped model: the stage's EMA weights with every binary conv packed into bits."""
    model = BIDiffSR(recipe.model)
    model.load_state_dict(substate(load_file(stage_weights(out, "diffusion")), "model."))
    model.fuse()
    return model
