"""RDSR: Reparameterized Lightweight Diffusion Model for Image SR (Sun et al., PRCV 2024).

Three parts, all at LR resolution:
* ``PriorEncoder`` (LPE): conv body with stride-2 stages, global average pooling and an MLP to
  a prior vector z [B, D]. LPE_hr sees cat(LR, PixelUnshuffle_s(HR)) (3 + 3 s^2 channels),
  LPE_lr sees the LR only and gives the diffusion condition c.
* ``PriorDiffusion``: a diffusion of T timesteps (T = 4 as DiffIR) over z with an MLP denoiser.
  Choices where the paper is silent: the denoiser predicts z_0 (x0-parameterisation; with
  abar_T ~ 1e-3 an eps-prediction would divide by ~0), sampling steps are deterministic DDIM
  (eta = 0), and the chain starts from pure Gaussian noise in training and inference alike
  (DiffIR noises the teacher's z, which leaks it at sqrt(abar_T) ~ 0.035: a train/test mismatch
  we remove).
  The noise comes from a seeded generator, so the output is a function of (image, seed).
* ``RepDecoder`` (RepD): head RepConv 3 -> C, N RepConv C -> C blocks whose output is FiLM-
  modulated per channel by z (gamma = 1 + W_g z, beta = W_b z, zero-initialised) then ReLU
  (or a leaky ReLU: ``negative_slope``),
  tail RepConv C -> 3 s^2, plus the LR repeated s^2 times (a nearest-neighbour image skip),
  then PixelShuffle(s). Deploying folds the FiLM of one image into its conv weights, so the
  inference body is Conv2d(3x3) and (leaky) ReLU only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import check_ranges
from ...diffusion.sampling import sample
from ...diffusion.schedules import alphas_cumprod, linear_betas
from ...nn.reparam import RepBranches, RepConv
from ...upscaler import TileFn, TileGraph, Upscaler


@dataclass(frozen=True)
class RDSRConfig:
    scale: int = 4
    channels: int = 48  # RepD width C
    blocks: int = 8  # FiLM-modulated RepConv blocks
    branches: RepBranches = field(default_factory=RepBranches)
    prior_dim: int = 64  # D
    lpe_channels: int = 64
    lpe_stages: int = 2  # stride-2 stages in each LPE
    denoiser_width: int = 256
    denoiser_layers: int = 4
    timesteps: int = 4  # T
    beta_start: float = 0.1  # DiffIR's linear schedule
    beta_end: float = 0.99
    # 0: ReLU (the paper's). > 0: a leaky ReLU, whose units cannot die (the shipped rdsr-x4
    # has 94 of its 528 channels dead on the held-out images); at the sweep budget 0.1 leaves
    # 38 silent but scores 0.02 dB lower (benchmarks/results/rdsr_recipe.md)
    negative_slope: float = 0.0

    RANGES: ClassVar = {"scale": (1, 8), "channels": (1, 1024), "blocks": (1, 256),
                        "prior_dim": (1, 4096), "lpe_channels": (1, 1024), "lpe_stages": (0, 8),
                        "denoiser_width": (1, 16384), "denoiser_layers": (1, 64),
                        "timesteps": (1, 10_000), "beta_start": (0, 1), "beta_end": (0, 1),
                        "negative_slope": (0, 1)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


class PriorEncoder(nn.Module):
    """[B, c_in, h, w] -> z [B, D]: a stride-2 conv, stride-2 stages, global pooling, MLP."""

    def __init__(self, c_in: int, cfg: RDSRConfig):
        super().__init__()
        c = cfg.lpe_channels
        layers: list[nn.Module] = [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.LeakyReLU(0.1)]
        for _ in range(cfg.lpe_stages):
            layers += [nn.Conv2d(c, c, 3, stride=2, padding=1), nn.LeakyReLU(0.1)]
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1)]
        self.body = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(c, c), nn.LeakyReLU(0.1), nn.Linear(c, cfg.prior_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.body(x).mean(dim=(2, 3)))


class Denoiser(nn.Module):
    """MLP predicting z_0 from (z_t, condition c, timestep t): [B, D] x [B, D] x [B] -> [B, D]."""

    def __init__(self, cfg: RDSRConfig):
        super().__init__()
        d, w = cfg.prior_dim, cfg.denoiser_width
        self.t_embed = nn.Embedding(cfg.timesteps, d)
        layers: list[nn.Module] = [nn.Linear(3 * d, w), nn.LeakyReLU(0.1)]
        for _ in range(cfg.denoiser_layers - 2):
            layers += [nn.Linear(w, w), nn.LeakyReLU(0.1)]
        layers.append(nn.Linear(w, d))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z_t: Tensor, c: Tensor, t: Tensor) -> Tensor:
        return self.mlp(torch.cat([z_t, c, self.t_embed(t)], dim=1))


class PriorDiffusion(nn.Module):
    """LPE_lr + denoiser: LR -> estimated prior z_hat by the full reverse chain (all T
    timesteps)."""

    def __init__(self, cfg: RDSRConfig):
        super().__init__()
        self.lpe_lr = PriorEncoder(3, cfg)
        self.denoiser = Denoiser(cfg)
        self.dim = cfg.prior_dim
        abar = alphas_cumprod(linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end))
        self.register_buffer("abar", abar.float(), persistent=False)

    def forward(self, lr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z_hat [B, D], the chain started from z_T ~ N(0, I) drawn from ``generator``."""
        z_T = torch.randn((lr.shape[0], self.dim), generator=generator, device=lr.device,
                          dtype=lr.dtype)
        return self.from_noise(lr, z_T)

    def from_noise(self, lr: Tensor, z_T: Tensor) -> Tensor:
        """z_hat [B, D] by the chain from a given z_T [B, D] (what an exported graph takes)."""
        c = self.lpe_lr(lr)
        # T-1 .. 0, the full chain, as Python ints: a traced graph (torch.export) unrolls it
        every_timestep = range(len(self.abar) - 1, -1, -1)
        return sample(lambda z, t: self.denoiser(z, c, t), z_T, self.abar, every_timestep, "x0")


class RepDecoder(nn.Module):
    """RepD(LR [B,3,h,w], z [B,D]) -> SR [B,3,sh,sw]."""

    def __init__(self, cfg: RDSRConfig):
        super().__init__()
        c, s = cfg.channels, cfg.scale
        self.scale = s
        self.head = RepConv(3, c, cfg.branches)
        self.blocks = nn.ModuleList(RepConv(c, c, cfg.branches) for _ in range(cfg.blocks))
        self.films = nn.ModuleList(nn.Linear(cfg.prior_dim, 2 * c) for _ in range(cfg.blocks))
        for film in self.films:
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.tail = RepConv(c, 3 * s * s, cfg.branches)
        self.act = activation(cfg.negative_slope)

    def film_params(self, z: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per block (gamma, beta), each [B, C]: gamma = 1 + W_g z, beta = W_b z."""
        out = []
        for film in self.films:
            g, b = film(z).chunk(2, dim=1)
            out.append((1 + g, b))
        return out

    def forward(self, lr: Tensor, z: Tensor) -> Tensor:
        x = self.act(self.head(lr))
        for block, (g, b) in zip(self.blocks, self.film_params(z), strict=True):
            x = self.act(g[:, :, None, None] * block(x) + b[:, :, None, None])
        return upsample_with_skip(self.tail(x), lr, self.scale)

    def set_explicit(self, explicit: bool) -> None:
        """Run the branches one by one (True) or as one summed kernel (False, same function)."""
        for m in self.modules():
            if isinstance(m, RepConv):
                m.explicit = explicit


def activation(negative_slope: float) -> nn.Module:
    """ReLU, or a leaky ReLU with this slope (one module: exported graphs see one op)."""
    return nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()


def upsample_with_skip(feat: Tensor, lr: Tensor, scale: int) -> Tensor:
    """PixelShuffle(feat [B,3s^2,h,w] + LR repeated s^2 times): learned residual over nearest."""
    return F.pixel_shuffle(feat + lr.repeat_interleave(scale * scale, dim=1), scale)


class SkipPixelShuffle(nn.Module):
    """The deployed upsampler: ``upsample_with_skip`` as a module (needs the LR tile)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, feat: Tensor, lr: Tensor) -> Tensor:
        return upsample_with_skip(feat, lr, self.scale)


class DeployedBody(nn.Module):
    """One image's RepD with its prior folded in: Sequential(Conv2d 3x3, (leaky) ReLU, ...) +
    upsampler."""

    def __init__(self, convs: list[nn.Conv2d], scale: int, negative_slope: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for conv in convs[:-1]:
            layers += [conv, activation(negative_slope)]
        layers.append(convs[-1])
        self.body = nn.Sequential(*layers)
        self.upsample = SkipPixelShuffle(scale)

    def forward(self, lr: Tensor) -> Tensor:
        # channels-last convolutions are ~1.5x faster on CPU (oneDNN) for these shapes
        feat = self.body(lr.contiguous(memory_format=torch.channels_last))
        return self.upsample(feat, lr).clamp(0, 1).contiguous()


class RDSR(Upscaler):
    """The inference model in either form.

    ``deployed=False``: LPE_lr + diffusion + RepD with explicit branches and runtime FiLM.
    ``deployed=True``: every RepConv already fused into one 3x3 conv (``fuse()``); per image,
    ``prepare`` folds the FiLM into those weights and returns a ``DeployedBody``.
    """

    method = "rdsr"
    seeded = True  # the noise comes from the seed
    bf16_safe = True  # benchmarks/results/deploy.md: within 0.01 dB of fp32 on every set

    def __init__(self, cfg: RDSRConfig, deployed: bool = False):
        super().__init__()
        self.cfg, self.scale, self.deployed = cfg, cfg.scale, deployed
        # receptive radius is blocks + 2 LR px; tiling's guard band (overlap / 4) plus the
        # cross-fade then sees almost no padding effects
        self.tile_overlap = 2 * (cfg.blocks + 2)
        # the fastest default tile on large images (benchmarks/results/large_images.md: the
        # activations of a 256 px tile stay in cache; larger tiles are slower per pixel)
        self.max_tile = 256
        # float32 activations alive at once: ~3 feature maps of C plus the 3 s^2 tail output
        self.bytes_per_lr_pixel = 4.0 * (3 * cfg.channels + 6 * cfg.scale**2)
        self.prior = PriorDiffusion(cfg)
        self.repd = RepDecoder(cfg)
        self.repd.set_explicit(True)
        if deployed:
            self.fuse()

    def fuse(self) -> None:
        """Replace every RepConv's branches by its single equivalent 3x3 conv, in place."""
        for name, module in list(self.repd.named_modules()):
            if isinstance(module, RepConv):
                w, b = module.kernel()
                conv = nn.Conv2d(module.c_in, module.c_out, 3, padding=1)
                conv.weight.data.copy_(w.detach())
                conv.bias.data.copy_(b.detach())
                _set_submodule(self.repd, name, conv)
        self.deployed = True

    def estimate_prior(self, lr: Tensor, seed: int = 0) -> Tensor:
        g = torch.Generator(device=lr.device).manual_seed(seed)
        return self.prior(lr, generator=g)

    @torch.no_grad()
    def prepare(self, lr: Tensor, sampling_steps: int | None = None, seed: int = 0) -> TileFn:
        del sampling_steps  # the prior chain always visits its T timesteps
        z = self.estimate_prior(lr, seed)
        if not self.deployed:
            return lambda tile: self.repd(tile, z.expand(tile.shape[0], -1)).clamp(0, 1)
        return self.fold(z)

    def tile_graph(self) -> TileGraph:
        """The prior estimated on the tile from a given z_T, then RepD with its FiLM on the
        activations (equal to the folded convs; the exported convs keep constant weights)."""
        return TileGraph(PriorAndBody(self), prior_noise=self.cfg.prior_dim)

    def fold(self, z: Tensor) -> DeployedBody:
        """Fold one image's FiLM (z [1, D]) into the fused convs.

        W' = gamma W and b' = gamma b + beta, per output channel.
        """
        convs = [_copy_conv(self.repd.head)]
        for conv, (g, b) in zip(self.repd.blocks, self.repd.film_params(z), strict=True):
            folded = _copy_conv(conv)
            folded.weight.data.mul_(g[0].view(-1, 1, 1, 1))
            folded.bias.data.mul_(g[0]).add_(b[0])
            convs.append(folded)
        convs.append(_copy_conv(self.repd.tail))
        body = DeployedBody(convs, self.scale, self.cfg.negative_slope)
        return body.to(z.device, memory_format=torch.channels_last)


class PriorAndBody(nn.Module):
    """One exportable RDSR evaluation: (LR [B, 3, h, w], z_T [B, D]) -> SR [B, 3, sh, sw]."""

    def __init__(self, model: RDSR):
        super().__init__()
        self.prior, self.repd = model.prior, model.repd

    def forward(self, lr: Tensor, z_T: Tensor) -> Tensor:
        return self.repd(lr, self.prior.from_noise(lr, z_T)).clamp(0, 1)


def _copy_conv(conv: nn.Module) -> nn.Conv2d:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError("fold() needs a fused model: call fuse() first")
    new = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
    new.load_state_dict(conv.state_dict())
    return new.to(conv.weight.device)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)
