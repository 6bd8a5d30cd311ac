"""BI-DiffSR training: ``twin`` (the full-precision twin) then ``diffusion`` (the binary
network, initialised from the twin: the usual practice for binary networks; with
``[twin] iterations = 0`` it starts from the twin's initialisation, i.e. from scratch, the
official ``BIDiffSRModel``).

Each stage: y = HR (or HR - bicubic_s(LR) with ``residual``), t ~ U{0..T-1} per sample (the
paper's; ``train_timesteps = "sampled"``: t uniform over the timesteps the sampler visits at the
model's default sampling steps, [T - 1] for one trailing step), eps ~ N(0, I),
y_t = sqrt(abar_t) y + sqrt(1 - abar_t) eps (images in [0, 1]), loss
L1(UNet(y_t, bicubic_s(LR), t), eps) (the paper's) or L1(..., y) (``prediction = "x0"``).
Randomness comes from the global torch RNG (the trainer reseeds it every iteration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...diffusion.sampling import ddim_timesteps, q_sample
from ...methods.bidiffsr.model import BIDiffSR, BIDiffSRConfig
from ...resize import imresize
from ...upscaler import UpscaleOptions, upscale_tensor
from ..checkpoints import Weights, substate
from ..stages import Export, Stage
from ..trainer import TrainConfig


@dataclass(frozen=True)
class BIDiffSRRecipe:
    model: BIDiffSRConfig = field(default_factory=BIDiffSRConfig)
    twin: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=0))
    diffusion: TrainConfig = field(default_factory=TrainConfig)
    val_sampling_steps: int = 50  # DDIM steps of the periodic validation
    train_timesteps: str = "all"  # "all" or "sampled" (the module docstring)
    # the twin starts quiet: its output conv zero (it starts as the bicubic skip, ADM's
    # zero_module) and its input conv's weights on the y_t channels zero (it first learns from
    # the condition; at t near T, y_t is noise of std 1 beside a condition of std ~0.25). At the
    # default init, or with the y_t weights zero alone, the twin sat at the bicubic skip for
    # 1000 iterations or more; fitting one fixed batch, the output conv zero alone left the
    # zero predictor after ~250 iterations, both after ~100
    quiet_init: bool = False

    def __post_init__(self) -> None:
        if self.train_timesteps not in ("all", "sampled"):
            raise ValueError(f"train_timesteps must be 'all' or 'sampled', "
                             f"got {self.train_timesteps!r}")


Recipe = BIDiffSRRecipe


class DiffusionStage(nn.Module):
    """The L1 loss of the UNet's prediction at t drawn from ``recipe.train_timesteps``;
    validation upscales with ``val_sampling_steps``."""

    def __init__(self, cfg: BIDiffSRConfig, recipe: BIDiffSRRecipe):
        super().__init__()
        self.model = BIDiffSR(cfg)
        self.val_options = UpscaleOptions(sampling_steps=recipe.val_sampling_steps)
        ts = (ddim_timesteps(cfg.timesteps, cfg.sampling_steps, cfg.spacing)
              if recipe.train_timesteps == "sampled" else range(cfg.timesteps))
        self.register_buffer("train_ts", torch.tensor(list(ts)), persistent=False)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return upscale_tensor(self.model, lr, self.val_options)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cfg, abar = self.model.cfg, self.model.abar
        cond = imresize(lr, self.model.scale)
        y = hr - cond if cfg.residual else hr
        t = self.train_ts[torch.randint(len(self.train_ts), (hr.shape[0],), device=hr.device)]
        eps = torch.randn_like(hr)
        pred = self.model.predict(q_sample(y, abar[t], eps), t, cond)
        return F.l1_loss(pred, eps if cfg.prediction == "eps" else y), {}


def twin_stage(recipe: BIDiffSRRecipe, weights: Mapping[str, Weights]) -> DiffusionStage:
    del weights
    module = DiffusionStage(replace(recipe.model, binarize=False), recipe)
    if recipe.quiet_init:
        unet, u = module.model.unet, recipe.model.unshuffle
        with torch.no_grad():
            unet.conv_out.weight.zero_()
            unet.conv_out.bias.zero_()
            unet.conv_in.weight[:, 3 * u * u :].zero_()  # PixelUnshuffle_u(cat(cond, y_t))
    return module


def diffusion_stage(recipe: BIDiffSRRecipe, weights: Mapping[str, Weights]) -> DiffusionStage:
    """The binary network with the twin's weights (signs and scales of its conv weights)."""
    module = DiffusionStage(recipe.model, recipe)
    module.model.load_state_dict(substate(weights["twin"], "model."))
    return module


def export(recipe: BIDiffSRRecipe, weights: Mapping[str, Weights]) -> BIDiffSR:
    """The shipped model: the stage's EMA weights with every binary conv packed into bits."""
    model = BIDiffSR(recipe.model)
    model.load_state_dict(substate(weights["diffusion"], "model."))
    model.fuse()
    return model


def twin_model(recipe: BIDiffSRRecipe, weights: Mapping[str, Weights]) -> BIDiffSR:
    """The trained full-precision twin as an inference model (the ablation's twin rows)."""
    model = BIDiffSR(replace(recipe.model, binarize=False))
    model.load_state_dict(substate(weights["twin"], "model."))
    return model


STAGES = (Stage("twin", twin_stage), Stage("diffusion", diffusion_stage, needs=("twin",)))
EXPORT = Export(export, needs=("diffusion",))
