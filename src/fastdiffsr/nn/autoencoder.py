"""KL-regularised convolutional autoencoder, Stable Diffusion's VAE (Rombach et al. 2022).

An image x [B, 3, H, W] in [-1, 1] is encoded to a diagonal Gaussian over latents
[B, C, H/f, W/f] with f = 2^(levels - 1) (Sec. 3, "perceptual image compression"); training
adds a small KL term towards N(0, I) (App. G). Architecture as SD's ``AutoencoderKL``:

* Encoder: conv_in, per level ``blocks_per_level`` ResBlocks then a stride-2 conv (not after the
  last level), mid (ResBlock, single-head pixel self-attention, ResBlock), GN, SiLU, conv3x3 to
  2C channels (mean, log-variance), then the 1x1 ``quant_conv`` 2C -> 2C.
* Decoder: the 1x1 ``post_quant_conv`` C -> C, conv_in to the widest level, mid, per level from
  the widest ``blocks_per_level + 1`` ResBlocks then nearest x2 + conv3x3 (not after level 0),
  GN, SiLU, conv3x3 to 3 channels.

``decoder.kind = "light"`` puts ``nn.light.LightDecoder`` (compute at latent resolution,
pixel-shuffle upsampling) in place of SD's decoder. ``KLAutoencoder(cfg, with_encoder=False)``
is the decoder half alone (an upscaler whose LR encoder is another network).

Diffusion runs on ``encode_latent(x)`` = latent * ``scaling_factor`` (diffusers'
``vae.config.scaling_factor``, chosen so the latents have about unit variance) and maps back
with ``decode_latent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_ranges
from .layers import (
    Downsample,
    PixelAttention,
    ResBlock,
    Stage,
    Upsample,
    check_divisible,
    group_norm,
)
from .light import LightDecoder

DECODERS = ("full", "light")


@dataclass(frozen=True)
class DecoderConfig:
    kind: str = "full"  # "full": SD's, at the autoencoder's widths; "light": LightDecoder
    channels: int = 32  # light: width at latent resolution, halved by every x2 upsampling
    blocks: int = 2  # light: residual blocks at latent resolution

    RANGES: ClassVar = {"channels": (1, 1024), "blocks": (0, 64)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        if self.kind not in DECODERS:
            raise ValueError(f"decoder kind must be one of {DECODERS}, got {self.kind!r}")


@dataclass(frozen=True)
class AutoencoderConfig:
    in_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one per level; f = 2^(levels - 1)
    blocks_per_level: int = 1
    latent_channels: int = 4  # C
    attention_mid: bool = True
    groups: int = 8  # GroupNorm groups
    scaling_factor: float = 1.0
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    RANGES: ClassVar = {"in_channels": (1, 4), "base_channels": (1, 1024),
                        "channel_mults": (1, 64), "blocks_per_level": (1, 16),
                        "latent_channels": (1, 256), "groups": (1, 1024),
                        "scaling_factor": (1e-6, 1e6)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        if not 1 <= len(self.channel_mults) <= 6:
            raise ValueError(f"1 to 6 levels, got channel_mults = {self.channel_mults}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)


# SD-1.5's VAE shape (83.65M parameters); 0.18215 is the latent scale of SD's trained weights,
# a freshly trained autoencoder should measure its own (1 / std of its latents)
SD_VAE = AutoencoderConfig(
    base_channels=128,
    channel_mults=(1, 2, 4, 4),
    blocks_per_level=2,
    latent_channels=4,
    groups=32,
    scaling_factor=0.18215,
)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over latents; ``params`` [B, 2C, h, w] = (mean, logvar)."""

    def __init__(self, params: Tensor):
        self.mean, logvar = params.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """mean + std * eps, eps ~ N(0, I) drawn from ``generator``: [B, C, h, w]."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dims: [B]."""
        kl = 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1)


class Encoder(nn.Module):
    """[B, 3, H, W] -> Gaussian parameters [B, 2C, H/f, W/f] (before ``quant_conv``)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        c = widths[0]
        for i, width in enumerate(widths):
            blocks: list[nn.Module] = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(c, width, cfg.groups))
                c = width
            last = i == len(widths) - 1
            self.levels.append(Stage(blocks, None if last else Downsample(c)))
        self.mid = _mid(c, cfg)
        self.norm_out = group_norm(c, cfg.groups)
        self.conv_out = nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            for block in level.blocks:
                h = block(h)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latents [B, C, h, w] (after ``post_quant_conv``) -> [B, 3, f h, f w]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        c = widths[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        self.mid = _mid(c, cfg)
        self.levels = nn.ModuleList()
        for i in reversed(range(len(widths))):
            blocks: list[nn.Module] = []
            for _ in range(cfg.blocks_per_level + 1):
                blocks.append(ResBlock(c, widths[i], cfg.groups))
                c = widths[i]
            self.levels.append(Stage(blocks, Upsample(c) if i > 0 else None))
        self.norm_out = group_norm(c, cfg.groups)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.levels:
            for block in level.blocks:
                h = block(h)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _mid(channels: int, cfg: AutoencoderConfig) -> nn.Sequential:
    """ResBlock, optional single-head pixel self-attention, ResBlock, at the widest level."""
    attn = PixelAttention(channels, cfg.groups) if cfg.attention_mid else nn.Identity()
    return nn.Sequential(
        ResBlock(channels, channels, cfg.groups), attn, ResBlock(channels, channels, cfg.groups)
    )


class KLAutoencoder(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] <-> latent [B, C, H/f, W/f]; H, W multiples of f."""

    def __init__(self, cfg: AutoencoderConfig, with_encoder: bool = True):
        super().__init__()
        self.cfg = cfg
        c = cfg.latent_channels
        if with_encoder:
            self.encoder = Encoder(cfg)
            self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        d = cfg.decoder
        self.decoder = (Decoder(cfg) if d.kind == "full" else
                        LightDecoder(d.channels, d.blocks, c, cfg.downsample_factor))

    @property
    def hr_channels(self) -> int:
        """The decoder's channels per output pixel at its widest (its activation memory's
        driver): the full decoder's last level; the light one's last pixel-shuffle, c / f."""
        if self.cfg.decoder.kind == "full":
            return self.cfg.base_channels * self.cfg.channel_mults[0]
        return max(1, self.cfg.decoder.channels // self.cfg.downsample_factor)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """x [B, 3, H, W] -> posterior over latents [B, C, H/f, W/f]."""
        if not hasattr(self, "encoder"):
            raise RuntimeError("this autoencoder is a decoder alone (with_encoder=False)")
        check_divisible(x, self.cfg.downsample_factor)
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """Unscaled latents z [B, C, h, w] -> reconstruction [B, 3, f h, f w]."""
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, DiagonalGaussian]:
        """x [B, 3, H, W] -> (reconstruction [B, 3, H, W], posterior)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    def encode_latent(
        self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """x [B, 3, H, W] -> diffusion latent [B, C, H/f, W/f]: posterior mode (or a sample)
        times ``scaling_factor``."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.cfg.scaling_factor

    def decode_latent(self, z: Tensor) -> Tensor:
        """Diffusion latent [B, C, h, w] -> image [B, 3, f h, f w]: undo the scaling, decode."""
        return self.decode(z / self.cfg.scaling_factor)
