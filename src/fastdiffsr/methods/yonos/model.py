"""YONOS-SR: You Only Need One Step (Noroozi et al., ECCV 2024), the inference model.

Latent diffusion SR: the LR image is bicubic-upsampled and encoded, z_lr = Enc(bicubic_s(LR))
[B, C, sh/f, sw/f]; a UNet on cat(z_t, z_lr) predicts the clean HR latent (x0-parameterisation);
DDIM from pure noise at t = T - 1 ("trailing" spacing), one step by default; the decoder maps
the latent to the SR image. Choices where the paper is silent (each measured in the model card):

* Residual x0: x0_hat = z_lr + UNet(cat(z_t, z_lr), t) (``residual = True``): at init the model
  already decodes to about the bicubic image, and the UNet learns what the LR latent lacks.
* Noise shared by tiles: when the latent grid is at least as fine as the LR grid (s/f = r >= 1)
  the image's noise is drawn once at latent resolution [1, C, rH, rW] (``image_noise``) and
  the tiler crops it with the LR. For f > s (the paper's f = 8 at x4) each tile draws its own
  seeded noise.
* The LR encoder (``lr_encoder.kind``): ``"autoencoder"`` is the paper's, the autoencoder's own
  encoder on bicubic_s(LR), a pass at HR resolution; ``"lr_grid"`` (the shipped x4 models,
  after Edge-SD-SR's decoupled encodings) is ``nn.light.LRGridEncoder`` on the LR pixels, and
  the model then holds the autoencoder's decoder half only. The x2 teacher of scale
  distillation, a training-only model, always uses the paper's encoder.
* Images enter the autoencoder in [-1, 1]; the latent scale (SD's 0.18215) is measured on the
  trained autoencoder (1 / std of training latents) and stored in the config.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ...config import check_ranges
from ...diffusion.sampling import ddim_timesteps, q_sample, sample
from ...diffusion.schedules import alphas_cumprod, scaled_linear_betas
from ...nn.autoencoder import AutoencoderConfig, KLAutoencoder
from ...nn.light import LRGridEncoder
from ...nn.unet import UNet, UNetConfig
from ...resize import imresize
from ...upscaler import FixedSteps, TileFn, TileGraph, Upscaler

LR_ENCODERS = ("autoencoder", "lr_grid")


@dataclass(frozen=True)
class LREncoderConfig:
    kind: str = "autoencoder"  # one of LR_ENCODERS
    channels: int = 32  # lr_grid: width on the LR grid
    blocks: int = 2  # lr_grid: residual blocks

    RANGES: ClassVar = {"channels": (1, 1024), "blocks": (0, 64)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        if self.kind not in LR_ENCODERS:
            raise ValueError(f"lr_encoder kind must be one of {LR_ENCODERS}, got {self.kind!r}")


@dataclass(frozen=True)
class YONOSConfig:
    scale: int = 4
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    timesteps: int = 1000  # T, the diffusion's timesteps
    beta_start: float = 0.00085  # SD's scaled-linear schedule
    beta_end: float = 0.012
    residual: bool = True  # x0_hat = z_lr + UNet(...); False: x0_hat = UNet(...)
    sampling_steps: int = 1  # default DDIM steps at inference
    lr_encoder: LREncoderConfig = field(default_factory=LREncoderConfig)
    # the largest LR tile by default: UNet attention is quadratic in the tile area (128:
    # Edge-SD-SR's tiles; the fast stack attends at 1/8 of the LR side and takes 512)
    max_tile: int = 128

    RANGES: ClassVar = {"scale": (1, 8), "timesteps": (1, 10_000), "beta_start": (0, 1),
                        "beta_end": (0, 1), "sampling_steps": (1, 10_000), "max_tile": (16, 4096)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


def lr_grid_encoder(cfg: YONOSConfig) -> LRGridEncoder:
    """The LR-grid encoder ``cfg.lr_encoder`` describes, at the model's scale and latent."""
    ae = cfg.autoencoder
    return LRGridEncoder(cfg.lr_encoder.channels, cfg.lr_encoder.blocks, cfg.scale,
                         ae.downsample_factor, ae.latent_channels)


def image_latent(autoencoder: KLAutoencoder, image: Tensor) -> Tensor:
    """Image [B, 3, H, W] in [0, 1] -> scaled latent [B, C, H/f, W/f] (posterior mode)."""
    return autoencoder.encode_latent(image * 2 - 1)


class YONOS(Upscaler):
    """Encoder, latent UNet and decoder; ``prepare`` returns the DDIM sampler per tile."""

    method = "yonos"
    seeded = True  # the noise comes from the seed

    def __init__(self, cfg: YONOSConfig):
        super().__init__()
        self.cfg, self.scale, self.default_sampling_steps = cfg, cfg.scale, cfg.sampling_steps
        ae, unet = cfg.autoencoder, cfg.unet
        c = ae.latent_channels
        if unet.in_channels != (2 * c if self.concat_lr() else c) or unet.out_channels != c:
            inputs = "cat(z_t, z_lr) (2C channels)" if self.concat_lr() else "z_t (C channels)"
            raise ValueError(f"the UNet must map {inputs} to C channels")
        grid_encoder = cfg.lr_encoder.kind == "lr_grid"
        self.autoencoder = KLAutoencoder(ae, with_encoder=not grid_encoder)
        if grid_encoder:
            self.lr_encoder = lr_grid_encoder(cfg)
        self.unet = UNet(unet)
        # LR sides must be multiples of this: s h divisible by f times the UNet's factor
        grid = ae.downsample_factor * unet.downsample_factor
        self.multiple_of = grid // math.gcd(grid, cfg.scale)
        self.minimum = 2 * self.multiple_of
        self.tile_overlap = 32  # LR px, as Edge-SD-SR's tiles; the receptive field is global
        self.max_tile = cfg.max_tile
        # float32 activations alive at once, dominated by ~6 decoder maps at full resolution
        self.bytes_per_lr_pixel = 4.0 * 6 * self.autoencoder.hr_channels * cfg.scale**2
        abar = alphas_cumprod(scaled_linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end))
        self.register_buffer("abar", abar.float(), persistent=False)

    def encode(self, image: Tensor) -> Tensor:
        """Image [B, 3, H, W] in [0, 1] -> scaled latent [B, C, H/f, W/f] (posterior mode)."""
        return image_latent(self.autoencoder, image)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent [B, C, h, w] -> image [B, 3, f h, f w], nominally in [0, 1]."""
        return (self.autoencoder.decode_latent(z) + 1) / 2

    def lr_latent(self, lr: Tensor) -> Tensor:
        """z_lr = Enc(bicubic_s(LR)), or Enc_lr(LR) with the LR-grid encoder: LR [B, 3, h, w]
        -> [B, C, sh/f, sw/f]."""
        if self.cfg.lr_encoder.kind == "lr_grid":
            return self.lr_encoder(lr)
        return self.encode(imresize(lr, self.scale))

    def concat_lr(self) -> bool:
        """Whether the UNet sees cat(z_t, z_lr) (YONOS: always) or z_t alone."""
        return True

    def drift(self, z_lr: Tensor) -> Tensor | None:
        """Where the forward process drifts as t -> T: None (YONOS: toward 0, as DDPM's)."""
        del z_lr
        return None

    def predict_x0(self, z_t: Tensor, t: Tensor, z_lr: Tensor) -> Tensor:
        """The clean-latent estimate from cat(z_t, z_lr) [B, 2C, h, w] (or z_t [B, C, h, w]
        alone when not ``concat_lr``) at timesteps t [B]; plus z_lr when ``residual``."""
        out = self.unet(torch.cat([z_t, z_lr], dim=1) if self.concat_lr() else z_t, t)
        return z_lr + out if self.cfg.residual else out

    def sample_latent(self, z_lr: Tensor, noise: Tensor, sampling_steps: int) -> Tensor:
        """DDIM (eta = 0) from x_T at t = T - 1 over ``sampling_steps`` trailing timesteps -> z_0
        [B, C, h, w]. x_T = noise, or with a drift d the forward process at T - 1 with d standing
        in for the unknown clean latent: x_T = d + sqrt(1 - abar_{T-1}) noise."""
        timesteps = ddim_timesteps(self.cfg.timesteps, sampling_steps, "trailing")
        drift = self.drift(z_lr)
        x_T = noise if drift is None else q_sample(drift, self.abar[timesteps[0]], noise, drift)
        return sample(lambda z, t: self.predict_x0(z, t, z_lr), x_T, self.abar, timesteps, "x0",
                      drift=drift)

    def super_resolve(self, lr: Tensor, noise: Tensor, sampling_steps: int) -> Tensor:
        """LR [B, 3, h, w] and latent noise -> SR [B, 3, sh, sw] in [0, 1]."""
        z_lr = self.lr_latent(lr)
        return self.decode(self.sample_latent(z_lr, noise, sampling_steps)).clamp(0, 1)

    def latent_shape(self, lr: Tensor) -> tuple[int, ...]:
        s, f = self.scale, self.cfg.autoencoder.downsample_factor
        h, w = lr.shape[-2:]
        return (lr.shape[0], self.cfg.autoencoder.latent_channels, h * s // f, w * s // f)

    def image_noise(self, lr: Tensor, seed: int = 0) -> Tensor | None:
        """The image's latent noise [1, C, sH/f, sW/f] when the latent grid is an integer
        multiple r = s/f of the LR grid; None otherwise (each tile then draws its own)."""
        s, f = self.scale, self.cfg.autoencoder.downsample_factor
        if s % f:
            return None
        g = torch.Generator(device=lr.device).manual_seed(seed)
        return torch.randn(self.latent_shape(lr), generator=g, device=lr.device)

    def prepare(self, lr: Tensor, sampling_steps: int | None = None, seed: int = 0) -> TileFn:
        """Tiles come with their crop of ``image_noise`` when the model has one."""
        del lr
        n = sampling_steps or self.default_sampling_steps

        def run(tile: Tensor, noise: Tensor | None = None) -> Tensor:
            if noise is None:
                g = torch.Generator(device=tile.device).manual_seed(seed)
                noise = torch.randn(self.latent_shape(tile), generator=g, device=tile.device)
            return self.super_resolve(tile, noise, n)

        return run

    def tile_graph(self) -> TileGraph:
        """The sampler at the default sampling steps with the tile's latent noise: on LR tiles
        of any side with the LR-grid encoder; on ``max_tile`` px tiles only with the HR
        encoder (the bicubic upsampling inside is fixed to the tile's size)."""
        s, f = self.scale, self.cfg.autoencoder.downsample_factor
        if s % f:
            raise NotImplementedError("export needs the image noise on a grid finer than the LR")
        static = 0 if self.cfg.lr_encoder.kind == "lr_grid" else self.max_tile
        return TileGraph(FixedSteps(self, self.default_sampling_steps),
                         image_noise=(self.cfg.autoencoder.latent_channels, s // f),
                         static_side=static)


def without_unet(model: YONOS) -> YONOS:
    """A copy whose UNet outputs zero, so x0_hat = z_lr: what the residual x0 starts from (an
    ablation row; needs ``residual``)."""
    if not model.cfg.residual:
        raise ValueError("without_unet needs residual = true: x0_hat would be 0")
    bypass = copy.deepcopy(model)
    torch.nn.init.zeros_(bypass.unet.conv_out.weight)
    torch.nn.init.zeros_(bypass.unet.conv_out.bias)
    return bypass
