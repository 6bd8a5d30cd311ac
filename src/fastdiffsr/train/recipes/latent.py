"""The training stages YONOS-SR and Edge-SD-SR share (Noroozi et al. 2024, Sec. 3; Hadji,
Noroozi et al. 2025): ``autoencoder`` -> ``teacher_x2`` -> ``student_x4`` -> ``decoder``, and
``direct_x4`` for the ablation. Each method's recipe (``yonos.py``, ``edgesdsr.py``) says which
model it trains (``new_model``) and whether its LR encoder trains (``lr_encoder_schedule``); the
stage modules get their parts passed in (composition).

* ``autoencoder``: the KL autoencoder on HR crops; L1 + ``gradient_weight`` L1 of image
  gradients (no pretrained perceptual network exists here) + ``kl_weight`` KL, with the KL summed
  over latents and divided by the pixel values, as SD's ``kl_weight = 1e-6``. It also tracks
  the std of its latents, from which the later stages set the latent scale. With
  ``autoencoder_from`` it starts from that file (another run's autoencoder stage), and with
  ``iterations = 0`` it is that file: two methods then share one latent space. With
  ``train_encoder = false`` it keeps that file's encoder (frozen; its latent space) and trains
  a new decoder for it, e.g. the light one. A model with the LR-grid encoder
  (``lr_encoder.kind = "lr_grid"``) has it trained here too, on the stage's x4 LR crops:
  |Enc_lr(LR) - z_hr|^2 with z_hr the scaled posterior mean of the HR, so the UNet stages start
  from an LR latent that already regresses the HR one.
* z_hr = Enc_hr(HR) comes from a frozen encoder: the model's own (YONOS-SR, Edge-SD-SR's
  ``lr_encoder = "shared"``) or a frozen copy of the autoencoder stage (``hr_autoencoder``,
  Edge-SD-SR's decoupled encodings, and any model with the LR-grid encoder), while the model's
  LR encoder trains with the UNet (``lr_encoder_schedule``) in its own optimizer group (lr and
  warm-up of its own, then the stage's cosine decay) or stays frozen.
* ``teacher_x2`` / ``direct_x4``: the model at x2 / x4; t ~ U{0..T-1}, eps ~ N(0, I),
  z_t = q(z_hr, t, eps), drifted toward z_lr when the model's process drifts (``model.drift``);
  loss |x0_hat(z_t, z_lr) - z_hr|^2, z_lr = Enc_lr(bicubic_s(LR)) with the LR made from the
  HR crop at the model's scale (as the benchmark LR files).
* The x2 teacher encodes the LR as the paper does, Enc(bicubic_2(LR)), whatever the model's
  LR encoder: it only supplies targets. The x4 stages take its UNet (and the LR-grid encoder
  from the autoencoder stage).
* ``student_x4``: initialised from the teacher; the frozen x2 teacher and the student share
  z_hr, t and eps, each on its own process (its own z_lr, of the x2 / x4 LR of the same crop);
  target = the teacher's x0_hat (scale distillation, Sec. 3.2; one round, x2 -> x4).
* ``decoder``: encoder and UNet frozen; the decoder is fine-tuned on the student's one-step
  latents with the image loss (Sec. 3.3). ``decoder_trains_unet = true`` (not the paper's)
  trains the UNet too, end to end through the one-step sample, and the LR encoder when it
  trains in the UNet stages (``lr_encoder_schedule``). With ``decoder_from`` it starts from
  that model file instead (fine-tuning a shipped model), and with ``adversarial.weight`` or
  ``feature_weight`` above 0 it adds a discriminator's term (``train/adversarial.py``).
* ``direct_x4`` (ablation): initialised from the teacher like the student, trained on ground
  truth at x4; the pair (student, direct) differs only in the target.

Validation: ``autoencoder`` reconstructs the HR; every other stage upscales the held-out LR
with its model through ``upscale_tensor`` (the x2 teacher at x2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from ...config import ConfigError
from ...data.datasets import downscale
from ...diffusion.sampling import q_sample
from ...methods.yonos.model import (
    YONOS,
    LREncoderConfig,
    YONOSConfig,
    image_latent,
    lr_grid_encoder,
)
from ...nn.autoencoder import KLAutoencoder
from ...nn.light import LightDecoder
from ...tiling import pad_to_requirements
from ...upscaler import upscale_tensor
from ...zoo import load_model
from ..adversarial import Adversarial, AdversarialConfig
from ..checkpoints import Weights, load_stages, substate
from ..stages import Export, Stage
from ..trainer import ParamGroup

Schedule = tuple[float, int]  # (peak lr, warm-up iterations) of an optimizer group


class LatentRecipe(Protocol):
    """What the shared stages read from a YONOS-SR or Edge-SD-SR recipe."""

    model: YONOSConfig
    kl_weight: float
    gradient_weight: float
    decoder_trains_unet: bool
    autoencoder_from: str | None
    train_encoder: bool
    decoder_from: str | None
    adversarial: AdversarialConfig

    def new_model(self, cfg: YONOSConfig) -> YONOS: ...

    def lr_encoder_schedule(self) -> Schedule | None: ...


def image_loss(sr: Tensor, hr: Tensor, gradient_weight: float) -> Tensor:
    """L1(sr, hr) + w (L1 of horizontal + vertical finite differences)."""
    def dx(x: Tensor) -> Tensor:
        return x[..., :, 1:] - x[..., :, :-1]

    def dy(x: Tensor) -> Tensor:
        return x[..., 1:, :] - x[..., :-1, :]

    grad = F.l1_loss(dx(sr), dx(hr)) + F.l1_loss(dy(sr), dy(hr))
    return F.l1_loss(sr, hr) + gradient_weight * grad


class AutoencoderStage(nn.Module):
    """HR crop -> reconstruction; ``latent_std`` is a running std of the posterior means
    (frozen with the encoder); the model's LR-grid encoder, if it has one, regresses the HR's
    scaled latent from the LR."""

    def __init__(self, cfg: YONOSConfig, kl_weight: float, gradient_weight: float,
                 train_encoder: bool = True):
        super().__init__()
        self.autoencoder = KLAutoencoder(cfg.autoencoder)
        if cfg.lr_encoder.kind == "lr_grid":
            self.lr_encoder = lr_grid_encoder(cfg)
        self.kl_weight, self.gradient_weight = kl_weight, gradient_weight
        self.train_encoder = train_encoder
        for module in lr_encoder_modules(self.autoencoder):
            module.requires_grad_(train_encoder)
        self.register_buffer("latent_std", torch.ones(()))

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        """The reconstruction of the HR (an autoencoder, not an upscaler)."""
        del lr
        h, w = hr.shape[-2:]
        x = pad_to_requirements(hr, self.autoencoder.cfg.downsample_factor, 1) * 2 - 1
        rec, _ = self.autoencoder(x, sample=False)
        return ((rec + 1) / 2).clamp(0, 1)[..., :h, :w]

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = hr * 2 - 1
        rec, posterior = self.autoencoder(x)
        if self.training and self.train_encoder:
            with torch.no_grad():
                self.latent_std.lerp_(posterior.mean.std(), 0.01)
        rec_loss = image_loss(rec, x, self.gradient_weight)
        kl = posterior.kl().mean() / x[0].numel()
        loss, logs = rec_loss + self.kl_weight * kl, {"rec": rec_loss, "kl": kl}
        if hasattr(self, "lr_encoder"):
            z_hr = posterior.mean.detach() / self.latent_std
            logs["lr_latent"] = F.mse_loss(self.lr_encoder(lr), z_hr)
            loss = loss + logs["lr_latent"]
        return loss, logs


def lr_encoder_modules(autoencoder: KLAutoencoder) -> list[nn.Module]:
    """The encoder half of an autoencoder, image -> posterior: ``encoder`` and ``quant_conv``."""
    return [autoencoder.encoder, autoencoder.quant_conv]


def model_lr_encoder(model: YONOS) -> list[nn.Module]:
    """The modules that make z_lr: the LR-grid encoder, or the autoencoder's encoder half."""
    if model.cfg.lr_encoder.kind == "lr_grid":
        return [model.lr_encoder]
    return lr_encoder_modules(model.autoencoder)


class UNetTraining(nn.Module):
    """The part the UNet stages share: ``model`` (its autoencoder frozen, its LR encoder
    trainable with a ``lr_encoder_schedule``) and where z_hr comes from (``hr_autoencoder``,
    frozen, or the model's own encoder when None)."""

    def __init__(self, model: YONOS, hr_autoencoder: KLAutoencoder | None,
                 lr_encoder_schedule: Schedule | None):
        super().__init__()
        self.model, self.hr_autoencoder = model, hr_autoencoder
        self.lr_encoder_schedule = lr_encoder_schedule
        model.requires_grad_(False)
        model.unet.requires_grad_(True)
        if hr_autoencoder is not None:
            hr_autoencoder.requires_grad_(False)
        if lr_encoder_schedule is not None:
            for module in model_lr_encoder(model):
                module.requires_grad_(True)

    def hr_latent(self, hr: Tensor) -> Tensor:
        """z_hr = Enc_hr(HR) [B, C, H/f, W/f], never trained."""
        ae = self.model.autoencoder if self.hr_autoencoder is None else self.hr_autoencoder
        with torch.no_grad():
            return image_latent(ae, hr)

    def param_groups(self) -> list[ParamGroup]:
        """The UNet at the stage's lr and warm-up; a training LR encoder at its own."""
        groups = [ParamGroup(list(self.model.unet.parameters()))]
        if self.lr_encoder_schedule is not None:
            encoder = [p for m in model_lr_encoder(self.model) for p in m.parameters()]
            groups.append(ParamGroup(encoder, *self.lr_encoder_schedule))
        return groups


def timesteps_and_noise(z0: Tensor, timesteps: int) -> tuple[Tensor, Tensor]:
    """(t [B] ~ U{0..T-1}, eps ~ N(0, I) of z0's shape), in this order from the global RNG."""
    t = torch.randint(timesteps, (z0.shape[0],), device=z0.device)
    return t, torch.randn_like(z0)


def denoised(model: YONOS, z0: Tensor, t: Tensor, eps: Tensor, lr: Tensor) -> Tensor:
    """``model``'s x0_hat on its own process: z_lr = Enc_lr(bicubic_s(LR)) at the model's scale,
    z_t = q(z0, t, eps) drifted as the model says; [B, C, h, w]."""
    z_lr = model.lr_latent(lr)
    return model.predict_x0(q_sample(z0, model.abar[t], eps, model.drift(z_lr)), t, z_lr)


class DenoiserStage(UNetTraining):
    """``teacher_x2`` and ``direct_x4``: x0_hat regresses z_hr at the model's scale."""

    def lr_of(self, lr: Tensor, hr: Tensor) -> Tensor:
        """The batch's LR if it is at the model's scale, else the HR downscaled to it."""
        same = lr.shape[-1] * self.model.scale == hr.shape[-1]
        return lr if same else downscale(hr, self.model.scale)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        return upscale_tensor(self.model, self.lr_of(lr, hr))

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z0 = self.hr_latent(hr)
        t, eps = timesteps_and_noise(z0, len(self.model.abar))
        pred = denoised(self.model, z0, t, eps, self.lr_of(lr, hr))
        return F.mse_loss(pred, z0), {}


class DistillStage(UNetTraining):
    """``student_x4``: target = the frozen ``teacher``'s x0_hat for the same z_hr, t and eps."""

    def __init__(self, model: YONOS, teacher: YONOS, hr_autoencoder: KLAutoencoder | None,
                 lr_encoder_schedule: Schedule | None):
        super().__init__(model, hr_autoencoder, lr_encoder_schedule)
        self.teacher = teacher.requires_grad_(False)

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return upscale_tensor(self.model, lr)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z0 = self.hr_latent(hr)
        t, eps = timesteps_and_noise(z0, len(self.model.abar))
        with torch.no_grad():
            target = denoised(self.teacher, z0, t, eps, downscale(hr, self.teacher.scale))
        pred = denoised(self.model, z0, t, eps, lr)
        return F.mse_loss(pred, target), {}


class DecoderStage(nn.Module):
    """``decoder``: Dec(one-step latent of the UNet) -> HR, image loss (plus ``adversarial``'s
    terms when a weight of theirs is above 0, the discriminator in its own optimizer group);
    the decoder (``post_quant_conv`` and ``decoder``, less the light decoder's sub-pixel convs
    with ``adversarial.frozen_upsampling``) trains, the UNet with ``train_unet`` and the LR
    encoder with ``train_lr_encoder`` (end to end)."""

    def __init__(self, model: YONOS, gradient_weight: float, train_unet: bool = False,
                 train_lr_encoder: bool = False,
                 adversarial: AdversarialConfig | None = None):
        super().__init__()
        self.adversarial = Adversarial(adversarial) if adversarial and adversarial.on else None
        self.model, self.gradient_weight = model, gradient_weight
        self.model.requires_grad_(False)
        self.model.autoencoder.decoder.requires_grad_(True)
        self.model.autoencoder.post_quant_conv.requires_grad_(True)
        self.model.unet.requires_grad_(train_unet)
        for module in model_lr_encoder(model):
            module.requires_grad_(train_lr_encoder)
        if self.adversarial is not None and adversarial.frozen_upsampling:
            decoder = model.autoencoder.decoder
            if not isinstance(decoder, LightDecoder):
                raise ConfigError("adversarial.frozen_upsampling needs the light decoder "
                                 '([model.autoencoder.decoder] kind = "light")')
            decoder.up.requires_grad_(False)
        self.train_unet, self.train_lr_encoder = train_unet, train_lr_encoder

    def validation_sr(self, lr: Tensor, hr: Tensor) -> Tensor:
        del hr
        return upscale_tensor(self.model, lr)

    def forward(self, lr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.set_grad_enabled(self.train_lr_encoder):
            z_lr = self.model.lr_latent(lr)
        with torch.set_grad_enabled(self.train_unet or self.train_lr_encoder):
            steps = self.model.default_sampling_steps
            z0 = self.model.sample_latent(z_lr, torch.randn_like(z_lr), steps)
        sr = self.model.decode(z0)
        loss = image_loss(sr, hr, self.gradient_weight)
        if self.adversarial is None:
            return loss, {}
        adv = self.adversarial.losses(sr, hr)
        return loss + self.adversarial.total(adv), {
            "image": loss, "g_adv": adv.generator, "fm_adv": adv.features,
            "d_adv": adv.discriminator}

    def param_groups(self) -> list[ParamGroup]:
        """The model's trainable parts at the stage's lr; the discriminator at its own."""
        model = [p for p in self.model.parameters() if p.requires_grad]
        if self.adversarial is None:
            return [ParamGroup(model)]
        return [ParamGroup(model),
                ParamGroup(list(self.adversarial.parameters()), self.adversarial.cfg.lr)]


def latent_config(recipe: LatentRecipe, autoencoder: Weights) -> YONOSConfig:
    """The model config with the latent scale 1 / std measured by the ``autoencoder`` stage."""
    std = float(autoencoder["latent_std"])
    return replace(recipe.model, autoencoder=replace(recipe.model.autoencoder,
                                                     scaling_factor=1.0 / std))


def _model(recipe: LatentRecipe, weights: Mapping[str, Weights], scale: int,
           init: str | None) -> YONOS:
    """The recipe's model at ``scale`` (below the recipe's: the x2 teacher, with the paper's LR
    encoder): the autoencoder stage's parts (autoencoder, LR-grid encoder), overridden by the
    ``init`` stage's model where it has the same parts; without ``init`` the UNet is new. The
    decoder half comes from the autoencoder stage unless ``init`` is the decoder stage: the
    UNet stages never train it (so a student can be paired with another autoencoder's
    decoder, as the decoder ablation does)."""
    cfg = replace(latent_config(recipe, weights["autoencoder"]), scale=scale)
    if scale != recipe.model.scale:
        cfg = replace(cfg, lr_encoder=LREncoderConfig())
    model = recipe.new_model(cfg)
    state = dict(weights["autoencoder"])
    if init is not None:
        decoder_half = ("autoencoder.decoder.", "autoencoder.post_quant_conv.")
        state.update({k: v for k, v in substate(weights[init], "model.").items()
                      if init == "decoder" or not k.startswith(decoder_half)})
    own = model.state_dict()
    missing, _ = model.load_state_dict({k: v for k, v in state.items() if k in own},
                                       strict=False)
    unfilled = [k for k in missing if init is not None or not k.startswith("unet.")]
    if unfilled:
        raise ValueError(f"no weights for {unfilled[:3]} ({len(unfilled)} tensors)")
    return model


def _encoders(recipe: LatentRecipe, weights: Mapping[str, Weights], model: YONOS
              ) -> tuple[KLAutoencoder | None, Schedule | None]:
    """(frozen HR autoencoder or None, LR encoder schedule or None) for a UNet stage on
    ``model``: z_hr needs a copy of the autoencoder when the LR encoder trains or is not the
    autoencoder's."""
    schedule = recipe.lr_encoder_schedule()
    if schedule is None and model.cfg.lr_encoder.kind == "autoencoder":
        return None, None
    hr_autoencoder = KLAutoencoder(latent_config(recipe, weights["autoencoder"]).autoencoder)
    hr_autoencoder.load_state_dict(substate(weights["autoencoder"], "autoencoder."))
    return hr_autoencoder, schedule


ENCODER_KEYS = ("autoencoder.encoder.", "autoencoder.quant_conv.", "latent_std")


def autoencoder_stage(recipe: LatentRecipe, weights: Mapping[str, Weights]) -> AutoencoderStage:
    """From scratch, from ``autoencoder_from``, or (``train_encoder = false``) with that file's
    encoder and latent scale and a new decoder."""
    del weights
    module = AutoencoderStage(recipe.model, recipe.kl_weight, recipe.gradient_weight,
                              recipe.train_encoder)
    if recipe.autoencoder_from is None:
        return module
    state = load_file(recipe.autoencoder_from)
    if recipe.train_encoder:
        module.load_state_dict(state)
        return module
    missing, _ = module.load_state_dict(
        {k: v for k, v in state.items() if k.startswith(ENCODER_KEYS)}, strict=False)
    if any(k.startswith(ENCODER_KEYS) for k in missing):
        raise ValueError(f"{recipe.autoencoder_from} lacks encoder weights: "
                         f"{[k for k in missing if k.startswith(ENCODER_KEYS)][:3]}")
    return module


def teacher_stage(recipe: LatentRecipe, weights: Mapping[str, Weights]) -> DenoiserStage:
    model = _model(recipe, weights, recipe.model.scale // 2, None)
    return DenoiserStage(model, *_encoders(recipe, weights, model))


def student_stage(recipe: LatentRecipe, weights: Mapping[str, Weights]) -> DistillStage:
    model = _model(recipe, weights, recipe.model.scale, "teacher_x2")
    teacher = _model(recipe, weights, recipe.model.scale // 2, "teacher_x2")
    return DistillStage(model, teacher, *_encoders(recipe, weights, model))


def direct_stage(recipe: LatentRecipe, weights: Mapping[str, Weights]) -> DenoiserStage:
    model = _model(recipe, weights, recipe.model.scale, "teacher_x2")
    return DenoiserStage(model, *_encoders(recipe, weights, model))


def decoder_stage(recipe: LatentRecipe, weights: Mapping[str, Weights]) -> DecoderStage:
    """From the student, or from ``decoder_from`` (a model file of this recipe's config)."""
    model = _model(recipe, weights, recipe.model.scale, "student_x4")
    if recipe.decoder_from is not None:
        start = load_model(recipe.decoder_from, deploy=False)
        if start.method != model.method or start.cfg != model.cfg:
            raise ConfigError(f"decoder_from {recipe.decoder_from}: not a model of this config "
                             f"(method {start.method!r}; the configs differ)")
        model.load_state_dict(start.state_dict())
    end_to_end = recipe.decoder_trains_unet
    return DecoderStage(model, recipe.gradient_weight, end_to_end,
                        end_to_end and recipe.lr_encoder_schedule() is not None,
                        recipe.adversarial)


def stage_model(recipe: LatentRecipe, weights: Mapping[str, Weights], stage: str) -> YONOS:
    """The x4 inference model a finished UNet stage holds (``decoder``: the shipped model;
    ``teacher_x2`` / ``student_x4`` / ``direct_x4``: with the autoencoder's own decoder)."""
    return _model(recipe, weights, recipe.model.scale, stage)


def trained_stage_model(recipe: LatentRecipe, out: Path, stage: str) -> YONOS:
    """``stage_model`` from a run folder (the ablation scripts' rows)."""
    return stage_model(recipe, load_stages(out, ["autoencoder", stage]), stage)


def export(recipe: LatentRecipe, weights: Mapping[str, Weights]) -> YONOS:
    return stage_model(recipe, weights, "decoder")


STAGES = (
    Stage("autoencoder", autoencoder_stage),
    Stage("teacher_x2", teacher_stage, needs=("autoencoder",)),
    Stage("student_x4", student_stage, needs=("autoencoder", "teacher_x2")),
    Stage("decoder", decoder_stage, needs=("autoencoder", "student_x4")),
    Stage("direct_x4", direct_stage, needs=("autoencoder", "teacher_x2"), ablation=True),
)
EXPORT = Export(export, needs=("autoencoder", "decoder"))
