"""Edge-SD-SR training inside YONOS-SR's scale distillation: ``autoencoder`` -> ``teacher_x2`` ->
``student_x4`` -> ``decoder``, and ``direct_x4`` for the ablation (Hadji, Noroozi et al. 2025;
stages and losses as ``methods/yonos/recipe.py``, whose pieces this module reuses).

* ``autoencoder``: YONOS's stage. With ``autoencoder_from`` (another run's
  ``OUT/autoencoder/model.safetensors``, e.g. yonos-x4's) it starts from that file, and with
  ``[autoencoder] steps = 0`` it is that file: Edge-SD-SR and YONOS-SR then share one latent
  space and the CPU time of one autoencoder.
* Decoupled encodings (``lr_encoder = "joint"``): z_hr comes from the autoencoder stage's
  frozen encoder (``hr_autoencoder``, training only); the model's own encoder, initialised from
  it, encodes the LR and trains with the UNet in ``teacher_x2``, ``student_x4`` and
  ``direct_x4``, at its own peak lr ``lr_encoder_lr`` and warm-up ``lr_encoder_warmup`` (a
  second optimizer group; then the stage's cosine decay). Gradients reach it through z_lr in
  the UNet's input, the residual x0 and the drift. ``"shared"``: one frozen encoder for both,
  as YONOS-SR.
* ``teacher_x2`` / ``direct_x4``: t ~ U{0..T-1}, eps ~ N(0, I),
  z_t = q(z_hr, t, eps) drifted toward z_lr (``model.drift``), loss |x0_hat(z_t, z_lr) - z_hr|^2.
* ``student_x4``: the frozen x2 teacher (UNet and LR encoder) and the student share z_hr, t and
  eps, and each sees its own process: the teacher z_t^(2) drifted toward its z_lr2 (x2 LR of the
  crop), the student z_t^(4) toward its z_lr4; target = the teacher's x0_hat (YONOS's "same
  z_t" when nothing drifts).
* ``decoder``: YONOS's stage on this model's one-step latents (LR encoder and UNet frozen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ...data.datasets import downscale
from ...diffusion.sampling import q_sample
from ...nn.autoencoder import KLAutoencoder
from ...train.trainer import ParamGroup, stage_weights
from ..rdsr.recipe import substate
from ..yonos import recipe as yr
from ..yonos.model import image_latent
from .model import EdgeSDSR, EdgeSDSRConfig

STAGES = yr.STAGES
ABLATION_STAGES = yr.ABLATION_STAGES
LR_ENCODERS = ("joint", "shared")


@dataclass(frozen=True)
class EdgeSDSRRecipe(yr.YONOSRecipe):
    model: EdgeSDSRConfig = field(default_factory=EdgeSDSRConfig)
    lr_encoder: str = "joint"  # one of LR_ENCODERS
    lr_encoder_lr: float = 1e-4  # the LR encoder's peak lr ("joint")
    lr_encoder_warmup: int = 300  # and its warm-up steps
    autoencoder_from: str | None = None  # a stage-weights file to start the autoencoder from

    def __post_init__(self) -> None:
        if self.lr_encoder not in LR_ENCODERS:
            raise ValueError(f"lr_encoder must be one of {LR_ENCODERS}, got {self.lr_encoder!r}")
        if self.autoencoder.steps == 0 and self.autoencoder_from is None:
            raise ValueError("[autoencoder] steps = 0 needs autoencoder_from (the file to use)")


def lr_encoder_modules(autoencoder: KLAutoencoder) -> list[nn.Module]:
    """The encoder half of an autoencoder, image -> posterior: ``encoder`` and ``quant_conv``."""
    return [autoencoder.encoder, autoencoder.quant_conv]


class DecoupledEncoders:
    """Mixin for the UNet stages (``self.model``: an EdgeSDSR with a frozen autoencoder): the
    HR / LR encoder split and the optimizer groups."""

    model: EdgeSDSR

    def decouple(self, cfg: EdgeSDSRConfig, recipe: EdgeSDSRRecipe) -> None:
        """"joint": a frozen copy of the autoencoder stage, ``hr_autoencoder`` (only its encoder
        is used), and a trainable LR encoder; "shared": ``hr_autoencoder`` is None and the
        model's frozen encoder serves both."""
        self.hr_autoencoder = None
        self.encoder_schedule = (recipe.lr_encoder_lr, recipe.lr_encoder_warmup)
        if recipe.lr_encoder == "joint":
            self.hr_autoencoder = KLAutoencoder(cfg.autoencoder).requires_grad_(False)
            for module in lr_encoder_modules(self.model.autoencoder):
                module.requires_grad_(True)

    def hr_latent(self, hr: Tensor) -> Tensor:
        """z_hr = Enc_hr(HR) [B, C, H/f, W/f], never trained."""
        ae = self.model.autoencoder if self.hr_autoencoder is None else self.hr_autoencoder
        with torch.no_grad():
            return image_latent(ae, hr)

    def param_groups(self) -> list[ParamGroup]:
        """The UNet at the stage's lr and warm-up; the LR encoder ("joint") at its own."""
        groups = [ParamGroup(list(self.model.unet.parameters()))]
        if self.hr_autoencoder is not None:
            encoder = [p for m in lr_encoder_modules(self.model.autoencoder)
                       for p in m.parameters()]
            groups.append(ParamGroup(encoder, *self.encoder_schedule))
        return groups


def denoised(model: EdgeSDSR, z0: Tensor, t: Tensor, eps: Tensor, lr: Tensor, scale: int
             ) -> Tensor:
    """``model``'s x0_hat on its own process: z_lr = Enc_lr(bicubic_s(LR)), z_t = q(z0, t, eps)
    drifted as the model's conditioning says; [B, C, h, w]."""
    z_lr = model.lr_latent(lr, scale)
    return model.predict_x0(q_sample(z0, model.abar[t], eps, model.drift(z_lr)), t, z_lr)


class DenoiserStage(DecoupledEncoders, yr.DenoiserStage):
    """``teacher_x2`` and ``direct_x4``: the UNet (and the LR encoder) regress z_hr at ``scale``."""

    def __init__(self, cfg: EdgeSDSRConfig, scale: int, recipe: EdgeSDSRRecipe):
        super().__init__(cfg, scale, EdgeSDSR)
        self.decouple(cfg, recipe)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z0 = self.hr_latent(hr)
        t, eps = yr.timesteps_and_noise(z0, len(self.model.abar))
        pred = denoised(self.model, z0, t, eps, self.lr_of(lr, hr), self.scale)
        return F.mse_loss(pred, z0), {}


class DistillStage(DecoupledEncoders, nn.Module):
    """``student_x4``: target = the frozen x2 teacher's x0_hat for the same z_hr, t and eps."""

    def __init__(self, cfg: EdgeSDSRConfig, recipe: EdgeSDSRRecipe):
        super().__init__()
        self.model = EdgeSDSR(cfg)
        self.model.autoencoder.requires_grad_(False)
        self.teacher = EdgeSDSR(cfg).requires_grad_(False)
        self.decouple(cfg, recipe)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return self.model.upscale_any_size(lr, 0, 1, self.model.scale)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z0 = self.hr_latent(hr)
        t, eps = yr.timesteps_and_noise(z0, len(self.model.abar))
        half = self.model.scale // 2
        with torch.no_grad():
            target = denoised(self.teacher, z0, t, eps, downscale(hr, half), half)
        pred = denoised(self.model, z0, t, eps, lr, self.model.scale)
        return F.mse_loss(pred, target), {}


def build_stage(recipe: EdgeSDSRRecipe, stage: str, out: Path) -> nn.Module:
    """A fresh stage module, initialised from the stages before it."""
    if stage == "autoencoder":
        module = yr.AutoencoderStage(recipe.model, recipe.kl_weight, recipe.gradient_weight)
        if recipe.autoencoder_from is not None:
            module.load_state_dict(load_file(recipe.autoencoder_from))
        return module
    cfg = yr.latent_config(recipe, out)
    if stage == "decoder":
        module = yr.DecoderStage(cfg, recipe.gradient_weight, EdgeSDSR,
                                 train_unet=recipe.decoder_trains_unet)
        module.model.load_state_dict(substate(load_file(stage_weights(out, "student_x4")),
                                              "model."))
        return module
    ae = substate(load_file(stage_weights(out, "autoencoder")), "autoencoder.")
    if stage == "teacher_x2":
        module = DenoiserStage(cfg, cfg.scale // 2, recipe)
        module.model.autoencoder.load_state_dict(ae)
    elif stage in ("student_x4", "direct_x4"):
        teacher = substate(load_file(stage_weights(out, "teacher_x2")), "model.")
        student = stage == "student_x4"
        module = DistillStage(cfg, recipe) if student else DenoiserStage(cfg, cfg.scale, recipe)
        module.model.load_state_dict(teacher)
        if student:
            module.teacher.load_state_dict(teacher)
    else:
        raise ValueError(f"unknown Edge-SD-SR stage {stage!r}; stages: {STAGES + ABLATION_STAGES}")
    if module.hr_autoencoder is not None:
        module.hr_autoencoder.load_state_dict(ae)
    return module


def assemble(recipe: EdgeSDSRRecipe, out: Path, stage: str) -> EdgeSDSR:
    """The inference model held by one finished stage (``decoder``: the shipped model)."""
    return yr.assemble(recipe, out, stage, EdgeSDSR)


def export(recipe: EdgeSDSRRecipe, out: Path) -> EdgeSDSR:
    return assemble(recipe, out, "decoder")
