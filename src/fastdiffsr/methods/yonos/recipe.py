"""YONOS-SR training: ``autoencoder`` -> ``teacher_x2`` -> ``student_x4`` -> ``decoder``, and
``direct_x4`` for the ablation (Noroozi et al. 2024, Sec. 3).

* ``autoencoder``: the KL autoencoder on HR crops; L1 + ``gradient_weight`` L1 of image
  gradients (no pretrained perceptual network exists here) + ``kl_weight`` KL, with the KL summed
  over latents and divided by the pixel values, as SD's ``kl_weight = 1e-6``. It also tracks
  the std of its latents, from which the later stages set the latent scale.
* ``teacher_x2``: the latent UNet on ground truth at scale s/2: t ~ U{0..T-1},
  z_t = q_sample(Enc(HR), t), loss |x0_hat(z_t, z_lr2) - Enc(HR)|^2 with z_lr2 from the x2 LR of
  the crop (made by ``downscale``, as the benchmark LR files).
* ``student_x4``: initialised from the teacher; for the same z_t its target is the frozen
  teacher's x0_hat(z_t, z_lr2), while it sees z_lr4 of the x4 LR of the same HR crop (scale
  distillation, Sec. 3.2; one round, x2 -> x4).
* ``decoder``: encoder and UNet frozen; the decoder is fine-tuned on the student's one-step latents
  with the image loss (Sec. 3.3). ``decoder_trains_unet = true`` (not the paper's) trains the
  UNet too, end to end through the one-step sample, so its latents also follow the image loss.
* ``direct_x4`` (ablation): initialised from the teacher like the student, but trained on ground
  truth at x4; the pair (student, direct) differs only in the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ...data.datasets import downscale
from ...diffusion.sampling import q_sample
from ...nn.autoencoder import KLAutoencoder
from ...nn.unet import UNet
from ...tiling import pad_to_requirements
from ...train.trainer import TrainConfig, stage_weights
from ..rdsr.recipe import substate
from .model import YONOS, YONOSConfig, x0_prediction

STAGES = ("autoencoder", "teacher_x2", "student_x4", "decoder")
ABLATION_STAGES = ("direct_x4",)


@dataclass(frozen=True)
class YONOSRecipe:
    model: YONOSConfig = field(default_factory=YONOSConfig)
    autoencoder: TrainConfig = field(default_factory=TrainConfig)
    teacher_x2: TrainConfig = field(default_factory=TrainConfig)
    student_x4: TrainConfig = field(default_factory=TrainConfig)
    decoder: TrainConfig = field(default_factory=TrainConfig)
    direct_x4: TrainConfig = field(default_factory=TrainConfig)
    kl_weight: float = 1e-6
    gradient_weight: float = 0.5
    decoder_trains_unet: bool = False  # the decoder stage also trains the UNet (not the paper's)


def image_loss(sr: Tensor, hr: Tensor, gradient_weight: float) -> Tensor:
    """L1(sr, hr) + w (L1 of horizontal + vertical finite differences)."""
    def dx(x: Tensor) -> Tensor:
        return x[..., :, 1:] - x[..., :, :-1]

    def dy(x: Tensor) -> Tensor:
        return x[..., 1:, :] - x[..., :-1, :]

    grad = F.l1_loss(dx(sr), dx(hr)) + F.l1_loss(dy(sr), dy(hr))
    return F.l1_loss(sr, hr) + gradient_weight * grad


class AutoencoderStage(nn.Module):
    """HR crop -> reconstruction; ``latent_std`` is a running std of the posterior means."""

    def __init__(self, cfg: YONOSConfig, kl_weight: float, gradient_weight: float):
        super().__init__()
        self.autoencoder = KLAutoencoder(cfg.autoencoder)
        self.kl_weight, self.gradient_weight = kl_weight, gradient_weight
        self.register_buffer("latent_std", torch.ones(()))

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del lr
        h, w = hr.shape[-2:]
        x = pad_to_requirements(hr, self.autoencoder.cfg.downsample_factor, 1) * 2 - 1
        rec, _ = self.autoencoder(x, sample=False)
        return ((rec + 1) / 2).clamp(0, 1)[..., :h, :w]

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        del lr
        x = hr * 2 - 1
        rec, posterior = self.autoencoder(x)
        if self.training:
            with torch.no_grad():
                self.latent_std.lerp_(posterior.mean.std(), 0.01)
        rec_loss = image_loss(rec, x, self.gradient_weight)
        kl = posterior.kl().mean() / x[0].numel()
        return rec_loss + self.kl_weight * kl, {"rec": rec_loss, "kl": kl}


class DenoiserStage(nn.Module):
    """``teacher_x2`` and ``direct_x4``: the UNet regresses Enc(HR) at scale ``scale``."""

    def __init__(self, cfg: YONOSConfig, scale: int, model_class: type[YONOS] = YONOS):
        super().__init__()
        self.model, self.scale = model_class(cfg), scale
        self.model.autoencoder.requires_grad_(False)

    def lr_of(self, lr: Tensor, hr: Tensor) -> Tensor:
        return lr if self.scale == self.model.scale else downscale(hr, self.scale)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        return self.model.upscale_any_size(self.lr_of(lr, hr), 0, 1, self.scale)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z0, z_t, t = noised_latents(self.model, hr)
        with torch.no_grad():
            z_lr = self.model.lr_latent(self.lr_of(lr, hr), self.scale)
        return F.mse_loss(self.model.predict_x0(z_t, t, z_lr), z0), {}


def timesteps_and_noise(z0: Tensor, train_timesteps: int) -> tuple[Tensor, Tensor]:
    """(t [B] ~ U{0..T-1}, eps ~ N(0, I) of z0's shape), in this order from the global RNG."""
    t = torch.randint(train_timesteps, (z0.shape[0],), device=z0.device)
    return t, torch.randn_like(z0)


def noised_latents(model: YONOS, hr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(z_0 = Enc(HR), z_t, t) with t ~ U{0..T-1} and eps ~ N(0, I) from the global RNG."""
    with torch.no_grad():
        z0 = model.encode(hr)
    t, eps = timesteps_and_noise(z0, len(model.abar))
    return z0, q_sample(z0, model.abar[t], eps), t


class DistillStage(nn.Module):
    """``student_x4``: target = the frozen x2 teacher's x0_hat for the same z_t."""

    def __init__(self, cfg: YONOSConfig):
        super().__init__()
        self.model = YONOS(cfg)
        self.model.autoencoder.requires_grad_(False)
        self.teacher = UNet(cfg.unet).requires_grad_(False)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return self.model.upscale_any_size(lr, 0, 1, self.model.scale)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        _, z_t, t = noised_latents(self.model, hr)
        teacher_scale = self.model.scale // 2
        with torch.no_grad():
            z_lr2 = self.model.lr_latent(downscale(hr, teacher_scale), teacher_scale)
            target = x0_prediction(self.teacher, z_t, t, z_lr2, self.model.cfg.residual)
            z_lr4 = self.model.lr_latent(lr, self.model.scale)
        return F.mse_loss(self.model.predict_x0(z_t, t, z_lr4), target), {}


class DecoderStage(nn.Module):
    """``decoder``: Dec(one-step latent of the UNet) -> HR, image loss; the decoder
    (``post_quant_conv`` and ``decoder``) trains, and the UNet with ``train_unet``."""

    def __init__(self, cfg: YONOSConfig, gradient_weight: float,
                 model_class: type[YONOS] = YONOS, train_unet: bool = False):
        super().__init__()
        self.model, self.gradient_weight = model_class(cfg), gradient_weight
        self.model.requires_grad_(False)
        self.model.autoencoder.decoder.requires_grad_(True)
        self.model.autoencoder.post_quant_conv.requires_grad_(True)
        self.model.unet.requires_grad_(train_unet)
        self.train_unet = train_unet

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return self.model.upscale_any_size(lr, 0, 1, self.model.scale)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            z_lr = self.model.lr_latent(lr, self.model.scale)
        with torch.set_grad_enabled(self.train_unet):
            z0 = self.model.sample_latent(z_lr, torch.randn_like(z_lr), self.model.default_steps)
        return image_loss(self.model.decode(z0), hr, self.gradient_weight), {}


def latent_config(recipe: YONOSRecipe, out: Path) -> YONOSConfig:
    """The model config with the latent scale 1 / std measured by the ``autoencoder`` stage."""
    std = float(load_file(stage_weights(out, "autoencoder"))["latent_std"])
    ae = replace(recipe.model.autoencoder, scaling_factor=1.0 / std)
    return replace(recipe.model, autoencoder=ae)


def build_stage(recipe: YONOSRecipe, stage: str, out: Path) -> nn.Module:
    """A fresh stage module, initialised from the stages before it."""
    if stage == "autoencoder":
        return AutoencoderStage(recipe.model, recipe.kl_weight, recipe.gradient_weight)
    cfg = latent_config(recipe, out)
    if stage == "teacher_x2":
        module = DenoiserStage(cfg, cfg.scale // 2)
        ae = load_file(stage_weights(out, "autoencoder"))
        module.model.autoencoder.load_state_dict(substate(ae, "autoencoder."))
        return module
    if stage == "decoder":
        module = DecoderStage(cfg, recipe.gradient_weight, train_unet=recipe.decoder_trains_unet)
        module.model.load_state_dict(substate(load_file(stage_weights(out, "student_x4")),
                                              "model."))
        return module
    if stage not in ("student_x4", "direct_x4"):
        raise ValueError(f"unknown YONOS stage {stage!r}; stages: {STAGES + ABLATION_STAGES}")
    teacher = substate(load_file(stage_weights(out, "teacher_x2")), "model.")
    module = DistillStage(cfg) if stage == "student_x4" else DenoiserStage(cfg, cfg.scale)
    module.model.load_state_dict(teacher)
    if isinstance(module, DistillStage):
        module.teacher.load_state_dict(substate(teacher, "unet."))
    return module


def assemble(recipe: YONOSRecipe, out: Path, stage: str, model_class: type[YONOS] = YONOS
             ) -> YONOS:
    """The inference model held by one finished stage (``decoder``: the shipped model;
    ``student_x4`` / ``direct_x4``: with the autoencoder's own decoder)."""
    model = model_class(latent_config(recipe, out))
    model.load_state_dict(substate(load_file(stage_weights(out, stage)), "model."))
    return model


def export(recipe: YONOSRecipe, out: Path) -> YONOS:
    return assemble(recipe, out, "decoder")
