"""RDSR training: stage ``prior`` (LPE_hr + RepD, L1) then ``diffusion`` (LPE_lr + denoiser +
RepD fine-tuned; loss L1(SR, HR) + lambda * L1(z_hat, z_hr) with the stage-1 LPE_hr frozen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ...train.trainer import TrainConfig, stage_weights
from .model import RDSR, PriorDiffusion, PriorEncoder, RDSRConfig, RepDecoder

STAGES = ("prior", "diffusion")


@dataclass(frozen=True)
class RDSRRecipe:
    model: RDSRConfig = field(default_factory=RDSRConfig)
    prior: TrainConfig = field(default_factory=TrainConfig)
    diffusion: TrainConfig = field(default_factory=TrainConfig)
    z_loss_weight: float = 1.0


def hr_prior_input(lr: Tensor, hr: Tensor, scale: int) -> Tensor:
    """cat(LR, PixelUnshuffle_s(HR)): [B, 3 + 3 s^2, h, w]."""
    return torch.cat([lr, F.pixel_unshuffle(hr, scale)], dim=1)


class PriorStage(nn.Module):
    """Stage 1: SR = RepD(LR, LPE_hr(LR, HR)); loss L1(SR, HR)."""

    def __init__(self, cfg: RDSRConfig):
        super().__init__()
        self.scale = cfg.scale
        self.lpe_hr = PriorEncoder(3 + 3 * cfg.scale**2, cfg)
        self.repd = RepDecoder(cfg)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        return self.repd(lr, self.lpe_hr(hr_prior_input(lr, hr, self.scale)))

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = F.l1_loss(self.validation_sr(lr, hr), hr)
        return loss, {}


class DiffusionStage(nn.Module):
    """Stage 2: SR = RepD(LR, z_hat), z_hat from the reverse chain on LPE_lr(LR)."""

    def __init__(self, cfg: RDSRConfig, z_loss_weight: float):
        super().__init__()
        self.scale, self.z_loss_weight = cfg.scale, z_loss_weight
        self.lpe_hr = PriorEncoder(3 + 3 * cfg.scale**2, cfg).requires_grad_(False)
        self.prior = PriorDiffusion(cfg)
        self.repd = RepDecoder(cfg)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return self.repd(lr, self.prior(lr))

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_hr = self.lpe_hr(hr_prior_input(lr, hr, self.scale)).detach()
        z_hat = self.prior(lr)
        sr_loss = F.l1_loss(self.repd(lr, z_hat), hr)
        z_loss = F.l1_loss(z_hat, z_hr)
        return sr_loss + self.z_loss_weight * z_loss, {"sr_l1": sr_loss, "z_l1": z_loss}


def build_stage(recipe: RDSRRecipe, stage: str, out: Path) -> nn.Module:
    """A fresh stage module; ``diffusion`` starts from the saved ``prior`` stage."""
    if stage == "prior":
        return PriorStage(recipe.model)
    if stage != "diffusion":
        raise ValueError(f"unknown RDSR stage {stage!r}; stages: {STAGES}")
    module = DiffusionStage(recipe.model, recipe.z_loss_weight)
    prior = load_file(stage_weights(out, "prior"))
    module.lpe_hr.load_state_dict(substate(prior, "lpe_hr."))
    module.repd.load_state_dict(substate(prior, "repd."))
    return module


def export(recipe: RDSRRecipe, out: Path) -> RDSR:
    """The inference model (training form; ``zoo`` fuses it on load) from the last stage."""
    state = load_file(stage_weights(out, "diffusion"))
    model = RDSR(recipe.model)
    model.prior.load_state_dict(substate(state, "prior."))
    model.repd.load_state_dict(substate(state, "repd."))
    return model


def substate(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
