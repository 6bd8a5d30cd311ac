"""RDSR training: stage ``prior`` (LPE_hr + RepD, L1) then ``diffusion`` (LPE_lr + denoiser +
RepD fine-tuned; loss L1(SR, HR) + lambda * L1(z_hat, z_hr) with the stage-1 LPE_hr frozen; the
SR term L2 or Charbonnier instead with ``diffusion_sr_loss``).

``prior`` validates the oracle: RepD on the prior of the HR image (what stage 2 learns to
estimate); ``diffusion`` validates the inference model through ``upscale_tensor``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...methods.rdsr.model import RDSR, PriorEncoder, RDSRConfig, RepDecoder
from ...upscaler import upscale_tensor
from ..checkpoints import Weights, substate
from ..stages import Export, Stage
from ..trainer import TrainConfig


@dataclass(frozen=True)
class RDSRRecipe:
    model: RDSRConfig = field(default_factory=RDSRConfig)
    prior: TrainConfig = field(default_factory=TrainConfig)
    diffusion: TrainConfig = field(default_factory=TrainConfig)
    z_loss_weight: float = 1.0
    # RepD's tail starts as a zero kernel, the model as the nearest-neighbour skip. With the
    # default init the summed branches grow the activations layer by layer (std 0.3 -> 2.2
    # through a 32-channel, 8-block RepD), the first steps kill the last block's ReLUs and
    # the model is stuck at the skip for good (the issue-25 sweep's c32-b8 point).
    zero_init_tail: bool = False
    # the diffusion stage's loss on the SR (it fine-tunes RepD after the prior stage's L1): one
    # of SR_LOSSES; "l2" / "charbonnier" is the light-SR recipe's short fine-tune after L1
    diffusion_sr_loss: str = "l1"

    def __post_init__(self) -> None:
        if self.diffusion_sr_loss not in SR_LOSSES:
            raise ValueError(f"diffusion_sr_loss must be one of {tuple(SR_LOSSES)}, "
                             f"got {self.diffusion_sr_loss!r}")


def charbonnier(sr: Tensor, hr: Tensor, eps: float = 1e-3) -> Tensor:
    """mean sqrt((sr - hr)^2 + eps^2): L1 with a smooth minimum (Lai et al. 2017, LapSRN)."""
    return torch.sqrt((sr - hr).square() + eps**2).mean()


SR_LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "charbonnier": charbonnier}
Recipe = RDSRRecipe


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
    """Stage 2: SR = RepD(LR, z_hat), z_hat from the reverse chain on LPE_lr(LR): the inference
    model ``model`` (its ``prior`` and ``repd`` train) beside the frozen LPE_hr."""

    def __init__(self, cfg: RDSRConfig, z_loss_weight: float, sr_loss: str = "l1"):
        super().__init__()
        self.scale, self.z_loss_weight = cfg.scale, z_loss_weight
        self.sr_loss = SR_LOSSES[sr_loss]
        self.lpe_hr = PriorEncoder(3 + 3 * cfg.scale**2, cfg).requires_grad_(False)
        self.model = RDSR(cfg)
        self.model.repd.set_explicit(False)  # train on the summed kernels (same function, faster)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return upscale_tensor(self.model, lr)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z_hr = self.lpe_hr(hr_prior_input(lr, hr, self.scale)).detach()
        z_hat = self.model.prior(lr)
        sr_loss = self.sr_loss(self.model.repd(lr, z_hat), hr)
        z_loss = F.l1_loss(z_hat, z_hr)
        return sr_loss + self.z_loss_weight * z_loss, {"sr": sr_loss, "z_l1": z_loss}


def prior_stage(recipe: RDSRRecipe, weights: Mapping[str, Weights]) -> PriorStage:
    del weights
    module = PriorStage(recipe.model)
    if recipe.zero_init_tail:
        module.repd.tail.zero_()
    return module


def diffusion_stage(recipe: RDSRRecipe, weights: Mapping[str, Weights]) -> DiffusionStage:
    """Starts from the ``prior`` stage's LPE_hr and RepD."""
    module = DiffusionStage(recipe.model, recipe.z_loss_weight, recipe.diffusion_sr_loss)
    module.lpe_hr.load_state_dict(substate(weights["prior"], "lpe_hr."))
    module.model.repd.load_state_dict(substate(weights["prior"], "repd."))
    return module


def export(recipe: RDSRRecipe, weights: Mapping[str, Weights]) -> RDSR:
    """The inference model (training form; ``zoo`` fuses it on load) from the last stage."""
    model = RDSR(recipe.model)
    model.load_state_dict(substate(weights["diffusion"], "model."))
    return model


STAGES = (Stage("prior", prior_stage), Stage("diffusion", diffusion_stage, needs=("prior",)))
EXPORT = Export(export, needs=("diffusion",))
