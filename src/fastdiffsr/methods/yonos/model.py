"""YONOS-SR: You Only Need One Step (Noroozi et al., ECCV 2024), the inference model.

Latent diffusion SR: the LR image is bicubic-upsampled and encoded, z_lr = Enc(bicubic_s(LR))
[B, C, sh/f, sw/f]; a UNet on cat(z_t, z_lr) predicts the clean HR latent (x0-parameterisation);
DDIM from pure noise at t = T - 1 ("trailing" spacing), one step by default; the decoder maps
the latent to the SR image. Choices where the paper is silent (each measured in the model card):

* Residual x0: x0_hat = z_lr + UNet(cat(z_t, z_lr), t) (``residual = True``): at init the model
  already decodes to about the bicubic image, and the UNet learns what the LR latent lacks.
* Noise shared by tiles: when the latent grid is at least as fine as the LR grid (s/f = r >= 1)
  the image's noise is drawn once at latent resolution and carried at LR resolution as
  PixelUnshuffle_r(noise) [1, C r^2, H, W], which the tiler crops with the LR (``tile_noise``).
  For f > s (the paper's f = 8 at x4) each tile draws its own seeded noise.
* Images enter the autoencoder in [-1, 1]; the latent scale (SD's 0.18215) is measured on the
  trained autoencoder (1 / std of training latents) and stored in the config.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ...diffusion.sampling import ddim_timesteps, q_sample, sample
from ...diffusion.schedules import alphas_cumprod, scaled_linear_betas
from ...nn.autoencoder import AutoencoderConfig, KLAutoencoder
from ...nn.layers import check_divisible
from ...nn.unet import UNet, UNetConfig
from ...resize import imresize
from ...tiling import pad_to_requirements
from ...upscaler import TileFn, Upscaler


@dataclass(frozen=True)
class YONOSConfig:
    scale: int = 4
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    train_timesteps: int = 1000  # T
    beta_start: float = 0.00085  # SD's scaled-linear schedule
    beta_end: float = 0.012
    residual: bool = True  # x0_hat = z_lr + UNet(...); False: x0_hat = UNet(...)
    steps: int = 1  # default DDIM steps at inference


def x0_prediction(unet: UNet, z_t: Tensor, t: Tensor, z_lr: Tensor, residual: bool,
                  concat: bool = True) -> Tensor:
    """The clean-latent estimate from cat(z_t, z_lr) [B, 2C, h, w] (or z_t [B, C, h, w] alone
    when not ``concat``) at timesteps t [B]."""
    out = unet(torch.cat([z_t, z_lr], dim=1) if concat else z_t, t)
    return z_lr + out if residual else out


def image_latent(autoencoder: KLAutoencoder, image: Tensor) -> Tensor:
    """Image [B, 3, H, W] in [0, 1] -> scaled latent [B, C, H/f, W/f] (posterior mode)."""
    return autoencoder.encode_latent(image * 2 - 1)


class YONOS(Upscaler):
    """Encoder, latent UNet and decoder; ``forward`` / ``prepare`` run the DDIM sampler."""

    method = "yonos"

    def __init__(self, cfg: YONOSConfig):
        super().__init__()
        self.cfg, self.scale, self.default_steps = cfg, cfg.scale, cfg.steps
        ae, unet = cfg.autoencoder, cfg.unet
        c = ae.latent_channels
        if unet.in_channels != (2 * c if self.concat_lr() else c) or unet.out_channels != c:
            inputs = "cat(z_t, z_lr) (2C channels)" if self.concat_lr() else "z_t (C channels)"
            raise ValueError(f"the UNet must map {inputs} to C channels")
        self.autoencoder = KLAutoencoder(ae)
        self.unet = UNet(unet)
        self.multiple_of = self.lr_multiple(cfg.scale)
        self.minimum = 2 * self.multiple_of
        self.tile_overlap = 32  # LR px, as Edge-SD-SR's tiles; the receptive field is global
        # UNet attention is quadratic in the tile area: 128 px LR tiles (Edge-SD-SR's) keep it
        # small at any image size
        self.max_tile = 128
        # float32 activations alive at once, dominated by ~6 decoder maps at full resolution
        self.bytes_per_lr_pixel = 4.0 * 6 * ae.base_channels * ae.channel_mults[0] * cfg.scale**2
        abar = alphas_cumprod(scaled_linear_betas(cfg.train_timesteps, cfg.beta_start,
                                                  cfg.beta_end))
        self.register_buffer("abar", abar.float(), persistent=False)

    def lr_multiple(self, scale: int) -> int:
        """LR sides must be multiples of this: s h divisible by f times the UNet's factor."""
        grid = self.cfg.autoencoder.downsample_factor * self.cfg.unet.downsample_factor
        return grid // math.gcd(grid, scale)

    def encode(self, image: Tensor) -> Tensor:
        """Image [B, 3, H, W] in [0, 1] -> scaled latent [B, C, H/f, W/f] (posterior mode)."""
        return image_latent(self.autoencoder, image)

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latent [B, C, h, w] -> image [B, 3, f h, f w], nominally in [0, 1]."""
        return (self.autoencoder.decode_latent(z) + 1) / 2

    def lr_latent(self, lr: Tensor, scale: int) -> Tensor:
        """z_lr = Enc(bicubic_s(LR)): LR [B, 3, h, w] -> [B, C, sh/f, sw/f]."""
        return self.encode(imresize(lr, scale))

    def concat_lr(self) -> bool:
        """Whether the UNet sees cat(z_t, z_lr) (YONOS: always) or z_t alone."""
        return True

    def drift(self, z_lr: Tensor) -> Tensor | None:
        """Where the forward process drifts as t -> T: None (YONOS: toward 0, as DDPM's)."""
        del z_lr
        return None

    def predict_x0(self, z_t: Tensor, t: Tensor, z_lr: Tensor) -> Tensor:
        return x0_prediction(self.unet, z_t, t, z_lr, self.cfg.residual, self.concat_lr())

    def sample_latent(self, z_lr: Tensor, noise: Tensor, steps: int) -> Tensor:
        """DDIM (eta = 0) from x_T at t = T - 1 over ``steps`` trailing timesteps -> z_0
        [B, C, h, w]. x_T = noise, or with a drift d the forward process at T - 1 with d standing
        in for the unknown clean latent: x_T = d + sqrt(1 - abar_{T-1}) noise."""
        timesteps = ddim_timesteps(self.cfg.train_timesteps, steps, "trailing")
        drift = self.drift(z_lr)
        x_T = noise if drift is None else q_sample(drift, self.abar[timesteps[0]], noise, drift)
        return sample(lambda z, t: self.predict_x0(z, t, z_lr), x_T, self.abar, timesteps, "x0",
                      drift=drift)

    def super_resolve(self, lr: Tensor, noise: Tensor, steps: int, scale: int | None = None
                      ) -> Tensor:
        """LR [B, 3, h, w] and latent noise -> SR [B, 3, sh, sw] in [0, 1]."""
        z_lr = self.lr_latent(lr, scale or self.scale)
        return self.decode(self.sample_latent(z_lr, noise, steps)).clamp(0, 1)

    def latent_shape(self, lr: Tensor, scale: int | None = None) -> tuple[int, ...]:
        s, f = scale or self.scale, self.cfg.autoencoder.downsample_factor
        h, w = lr.shape[-2:]
        return (lr.shape[0], self.cfg.autoencoder.latent_channels, h * s // f, w * s // f)

    def noise_ratio(self) -> int:
        """r = s / f when the latent grid is an integer multiple of the LR grid, else 0."""
        s, f = self.scale, self.cfg.autoencoder.downsample_factor
        return s // f if s % f == 0 else 0

    def tile_noise(self, lr: Tensor, seed: int = 0) -> Tensor | None:
        """The image's latent noise at LR resolution, PixelUnshuffle_r(noise) [1, C r^2, H, W]."""
        r = self.noise_ratio()
        if r == 0:
            return None
        g = torch.Generator(device=lr.device).manual_seed(seed)
        noise = torch.randn(self.latent_shape(lr), generator=g, device=lr.device)
        return F.pixel_unshuffle(noise, r)

    @torch.no_grad()
    def prepare(self, lr: Tensor, steps: int | None = None, seed: int = 0) -> TileFn:
        """Tiles arrive as cat(LR, ``tile_noise``) when the model has tile noise."""
        n = steps or self.default_steps
        r = self.noise_ratio()

        def run(tile: Tensor) -> Tensor:
            if r:
                return self.super_resolve(tile[:, :3], F.pixel_shuffle(tile[:, 3:], r), n)
            g = torch.Generator(device=tile.device).manual_seed(seed)
            noise = torch.randn(self.latent_shape(tile), generator=g, device=tile.device)
            return self.super_resolve(tile, noise, n)

        return run

    def forward(self, lr: Tensor) -> Tensor:
        """Whole images [B, 3, h, w] (sides multiples of ``multiple_of``), seed 0, default steps."""
        check_divisible(lr, self.multiple_of)
        out = []
        for x in lr.split(1):
            noise = self.tile_noise(x)
            out.append(self.prepare(x)(x if noise is None else torch.cat([x, noise], 1)))
        return torch.cat(out)

    def upscale_any_size(self, lr: Tensor, noise_seed: int, steps: int, scale: int) -> Tensor:
        """Validation helper: LR of any size (reflect-padded to the grid, output cropped)."""
        h, w = lr.shape[-2:]
        x = pad_to_requirements(lr, self.lr_multiple(scale), 1)
        g = torch.Generator(device=lr.device).manual_seed(noise_seed)
        noise = torch.randn(self.latent_shape(x, scale), generator=g, device=lr.device)
        return self.super_resolve(x, noise, steps, scale)[..., : h * scale, : w * scale]


def without_unet(model: YONOS) -> YONOS:
    """A copy whose UNet outputs zero, so x0_hat = z_lr: what the residual x0 starts from (an
    ablation row; needs ``residual``)."""
    if not model.cfg.residual:
        raise ValueError("without_unet needs residual = true: x0_hat would be 0")
    bypass = copy.deepcopy(model)
    torch.nn.init.zeros_(bypass.unet.conv_out.weight)
    torch.nn.init.zeros_(bypass.unet.conv_out.bias)
    return bypass
