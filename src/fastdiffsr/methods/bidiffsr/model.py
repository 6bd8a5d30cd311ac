"""BI-DiffSR: Binarized Diffusion Model for Image SR (Chen et al., NeurIPS 2024), the inference
model, following the official code's UNet (``BIDiffSRUNet``).

The UNet runs at HR resolution on cat(bicubic_s(LR), x_t) [B, 6, H, W] and predicts eps
(T = 2000, linear betas 1e-6 -> 1e-2, images in [0, 1] as the official data loader). Layout for
channel mults m_0..m_{L-1}, width C, n res blocks per level:

* encoder: FP conv3x3 6 -> C; per level n binary ResBlocks, then CP-Down (C_l -> 2 C_l, H/2)
  between levels; every output is kept as a skip;
* bottleneck: binary ResBlock + FP self-attention, binary ResBlock;
* decoder, lowest resolution first: per level n + 1 times CS-Fusion(cat(x, skip)) then a
  ResBlock, then CP-Up (C_l -> C_l / 2, 2H) between levels. The ``fp_levels`` (official
  ``fp_res`` = [256, 128] at 256 px: the two highest-resolution levels) use FP CS-Fusion and FP
  ResBlocks; CP-Up is always binary;
* output: GroupNorm, SiLU, FP conv3x3 C -> 3.

Binary ResBlock = GN, SiLU, BIConv3x3, + Linear(SiLU(emb)), GN, SiLU, dropout, BIConv3x3, + x.
Full precision: input/output convs, time MLP, norms, attention, FP levels. Every BIConv's TaR /
TaA group is floor(t K / T).

Where we differ from the official code (each a generalisation or a shared-code choice):
* TaR/TaA groups are chosen per sample; the official code uses the first sample's timestep for
  the whole batch and therefore trains with one timestep per batch. We draw one per sample.
  (Groups absent from a batch get zero gradients here, none there: AdamW's momentum still
  moves them a little.)
* The timestep embedding is ``nn.layers.sinusoidal_embedding`` (cosines first; the official
  puts sines first: the same features in another order, before a learned Linear).
* Sampling is ``diffusion.sampling.sample`` (DDIM, eta = 0, "leading" timesteps as diffusers).
  diffusers' DDIMScheduler, which the official code uses, clips x0_hat to [-1, 1] at every step
  by default (``clip_sample=True``); with ``clip_x0`` we clip it to the data range [0, 1]. At
  T = 2000 the last timesteps keep sqrt(abar_t) ~ 0.02 of the signal, so an eps error there is
  magnified ~50x in x0_hat: on a held-out training crop, x4 config after 1000 iterations,
  10 sampling steps gave 10.8 dB unclipped, 10.9 dB clipped to [-1, 1] and 25.8 dB clipped to
  [0, 1].
* The condition is our MATLAB-style bicubic (``resize.imresize``), not OpenCV's INTER_CUBIC.

The CPU formulation (switches; the defaults are the paper's, ``configs/bidiffsr/paper.toml``).
The paper's needs ~1M GPU iterations: eps from pure noise at HR resolution. For two CPU cores
(``configs/bidiffsr/x4.toml``), with the same binary blocks:
* ``residual``: diffuse y = HR - bicubic_s(LR), so the chain starts from the upsampled LR plus
  noise (as RDSR / ResShift start near the LR), and SR = bicubic_s(LR) + y_0;
* ``prediction = "x0"``: the UNet predicts y_0 (L1 on it is L1 on the image), so one sampling
  step is already a full estimate; ``spacing = "trailing"``: the steps start at T - 1;
* ``unshuffle`` u: the levels run on PixelUnshuffle_u of cat(bicubic_s(LR), y_t), u^2 fewer
  pixels (u = s: at LR resolution, as ESPCN / RDSR), the output PixelShuffle_u'd;
* ``binarize = false`` is the full-precision twin (real activations and weights in every BIConv,
  the same parameters): trained first, it initialises the binary network (``train/recipes``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import check_ranges
from ...diffusion.sampling import ddim_timesteps, q_sample, sample
from ...diffusion.schedules import alphas_cumprod, linear_betas
from ...nn.binary import (
    BIConv,
    CPDown,
    CPUp,
    CSFusion,
    FPConv,
    PackedBinaryConv2d,
    timestep_group,
)
from ...nn.layers import (
    SelfAttention,
    from_tokens,
    sinusoidal_embedding,
    to_tokens,
)
from ...resize import imresize
from ...upscaler import FixedSteps, TileFn, TileGraph, Upscaler


@dataclass(frozen=True)
class BIDiffSRConfig:
    scale: int = 4
    channels: int = 64  # inner width C
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)
    res_blocks: int = 2  # per encoder level (the decoder has one more)
    norm_groups: int = 16
    dropout: float = 0.2
    fp_levels: tuple[int, ...] = (0, 1)  # full-precision decoder levels (0: highest resolution)
    timestep_groups: int = 5  # K
    timesteps: int = 2000  # T
    beta_start: float = 1e-6
    beta_end: float = 1e-2
    sampling_steps: int = 50  # DDIM steps at inference
    clip_x0: bool = True  # clamp every step's x0_hat to the data range [0, 1]
    # the formulation (defaults: the paper's; see the module docstring)
    prediction: str = "eps"  # what the UNet predicts: "eps" or "x0"
    residual: bool = False  # diffuse HR - bicubic_s(LR) instead of HR
    spacing: str = "leading"  # DDIM timesteps: "leading" (diffusers') or "trailing" (from T - 1)
    unshuffle: int = 1  # the UNet runs on PixelUnshuffle_u of its HR input (1: at HR resolution)
    binarize: bool = True  # False: the full-precision twin (real activations and weights)

    RANGES: ClassVar = {"scale": (1, 8), "channels": (1, 1024), "channel_mults": (1, 64),
                        "res_blocks": (1, 32), "norm_groups": (1, 1024), "dropout": (0, 1),
                        "fp_levels": (0, 16), "timestep_groups": (1, 64),
                        "timesteps": (1, 10_000), "beta_start": (0, 1), "beta_end": (0, 1),
                        "sampling_steps": (1, 10_000), "unshuffle": (1, 16)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        if len(self.channel_mults) > 8:
            raise ValueError(f"at most 8 levels, got channel_mults = {self.channel_mults}")
        if self.prediction not in ("eps", "x0") or self.spacing not in ("leading", "trailing"):
            raise ValueError(f"prediction must be 'eps' or 'x0' and spacing 'leading' or "
                             f"'trailing', got {self.prediction!r} and {self.spacing!r}")


class ResBlock(nn.Module):
    """[B, C, H, W], emb [B, C_emb], group g [B] -> [B, C, H, W]; binary or FP convs."""

    def __init__(self, c: int, cfg: BIDiffSRConfig, binary: bool):
        super().__init__()
        k = cfg.timestep_groups
        self.norm1 = nn.GroupNorm(cfg.norm_groups, c)
        self.conv1 = BIConv(c, c, 3, k, cfg.binarize) if binary else FPConv(c, c, 3)
        self.emb_proj = nn.Linear(cfg.channels, c)
        self.norm2 = nn.GroupNorm(cfg.norm_groups, c)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = BIConv(c, c, 3, k, cfg.binarize) if binary else FPConv(c, c, 3)

    def forward(self, x: Tensor, emb: Tensor, g: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)), g)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        return x + self.conv2(self.dropout(F.silu(self.norm2(h))), g)


class Attention(nn.Module):
    """x + one-head self-attention over pixels of GN(x) (qkv without bias): [B, C, H, W]."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.attn = SelfAttention(c, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        return x + from_tokens(self.attn(to_tokens(self.norm(x))), h, w)


class BIDiffSRUNet(nn.Module):
    """UNet(x_t [B, 3, H, W], cond [B, 3, H, W], t [B]) -> eps_hat or x0_hat [B, 3, H, W];
    H, W multiples of u 2^(L-1). With ``unshuffle`` u > 1 the levels run on
    PixelUnshuffle_u(cat(cond, x_t)) [B, 6 u^2, H/u, W/u] and the output is PixelShuffle_u'd."""

    def __init__(self, cfg: BIDiffSRConfig):
        super().__init__()
        c, k, n = cfg.channels, cfg.timestep_groups, cfg.res_blocks
        self.cfg = cfg
        self.time_mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.SiLU(), nn.Linear(4 * c, c))
        u = cfg.unshuffle
        self.conv_in = nn.Conv2d(6 * u * u, c, 3, padding=1)
        widths = [c * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        skips, width = [c], c
        for level, w in enumerate(widths):
            if width != w:
                raise ValueError(f"level {level} has {w} channels, CP-Down gives {width}")
            self.down.extend(ResBlock(w, cfg, binary=True) for _ in range(n))
            skips += [w] * n
            if level < len(widths) - 1:
                self.down.append(CPDown(w, k, cfg.binarize))
                width = 2 * w
                skips.append(width)
        self.mid1 = ResBlock(width, cfg, binary=True)
        self.mid_attn = Attention(width, cfg.norm_groups)
        self.mid2 = ResBlock(width, cfg, binary=True)
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w, binary = widths[level], level not in cfg.fp_levels
            for _ in range(n + 1):
                if width + skips.pop() != 2 * w:
                    raise ValueError("CS-Fusion needs decoder and skip of the level's width")
                self.up += [CSFusion(w, k, binary, cfg.binarize), ResBlock(w, cfg, binary)]
                width = w
            if level > 0:
                self.up.append(CPUp(w, k, cfg.binarize))
                width = w // 2
        self.norm_out = nn.GroupNorm(cfg.norm_groups, width)
        self.conv_out = nn.Conv2d(width, 3 * u * u, 3, padding=1)

    def forward(self, x_t: Tensor, cond: Tensor, t: Tensor) -> Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.cfg.channels))
        g = timestep_group(t, self.cfg.timesteps, self.cfg.timestep_groups)
        u = self.cfg.unshuffle
        x = self.conv_in(F.pixel_unshuffle(torch.cat([cond, x_t], dim=1), u))
        skips = [x]
        for layer in self.down:
            x = layer(x, emb, g) if isinstance(layer, ResBlock) else layer(x, g)
            skips.append(x)
        x = self.mid2(self.mid_attn(self.mid1(x, emb, g)), emb, g)
        for layer in self.up:
            if isinstance(layer, CSFusion):
                x = layer(torch.cat([x, skips.pop()], dim=1), g)
            else:
                x = layer(x, emb, g) if isinstance(layer, ResBlock) else layer(x, g)
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(x))), u)

    @property
    def downsample_factor(self) -> int:
        """HR sides must be multiples of this."""
        return self.cfg.unshuffle * 2 ** (len(self.cfg.channel_mults) - 1)


class BIDiffSR(Upscaler):
    """The BI-DiffSR sampler: DDIM from x_T = N(0, I) at HR resolution, conditioned on the
    bicubic-upsampled LR. ``fuse()`` packs every binary conv into bits (the shipped form);
    ``load_state_dict`` accepts either form."""

    method = "bidiffsr"
    seeded = True  # the noise comes from the seed
    bf16_safe = True  # benchmarks/results/deploy.md: within 0.01 dB of fp32 on every set

    def __init__(self, cfg: BIDiffSRConfig):
        super().__init__()
        self.cfg, self.scale = cfg, cfg.scale
        self.default_sampling_steps = cfg.sampling_steps
        self.unet = BIDiffSRUNet(cfg)
        grid = self.unet.downsample_factor
        self.multiple_of = grid // math.gcd(grid, cfg.scale)
        self.minimum = 2 * self.multiple_of
        # the bottleneck attention is global, so tiles cannot be exact: the official code runs
        # whole test images; we cap tiles at 128 px LR (512 px HR, 128^2 attention tokens at
        # x4's bottleneck), so a benchmark image is one evaluation per step, with 32 LR px of
        # overlap as YONOS (64 px tiles would cost B100 2.5x the evaluations)
        self.tile_overlap, self.max_tile = 32, 128
        # float32 activations alive at once at HR resolution, dominated by the level-0 skips
        # (res_blocks + 2 maps of C) plus ~4 working maps of C
        # (res_blocks + 2 maps of C) plus ~4 working maps of C, on a grid u^2 coarser, and ~12
        # maps of 3 channels at HR resolution (condition, noise, the sampler's state)
        level0 = cfg.channels * (cfg.res_blocks + 6) / cfg.unshuffle**2
        self.bytes_per_lr_pixel = 4.0 * cfg.scale**2 * (level0 + 12)
        abar = alphas_cumprod(linear_betas(cfg.timesteps, cfg.beta_start, cfg.beta_end))
        self.register_buffer("abar", abar.float(), persistent=False)

    def fuse(self) -> None:
        """Pack every BIConv's weights (sign bits + per-channel scale), in place."""
        for m in self.modules():
            if isinstance(m, BIConv):
                m.pack()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load the training form, or the packed form (then the model is packed first)."""
        if any(k.endswith(".conv.bits") for k in state_dict):
            self.fuse()
        return super().load_state_dict(state_dict, strict, assign)

    def predict(self, y_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """The UNet's eps_hat or y0_hat (``prediction``) for the diffused y_t [B, 3, H, W]."""
        return self.unet(y_t, cond, t)

    def super_resolve(self, lr: Tensor, noise: Tensor, sampling_steps: int) -> Tensor:
        """LR [B, 3, h, w] and noise [B, 3, sh, sw] -> SR [B, 3, sh, sw] by DDIM on y (HR, or
        the residual HR - bicubic_s(LR)): y_T = noise, or with ``residual`` the forward process
        at the first timestep from y = 0, i.e. the chain starts from bicubic_s(LR) plus noise;
        SR = bicubic_s(LR) + y_0 (``residual``) or y_0."""
        cond = imresize(lr, self.scale)
        ts = ddim_timesteps(self.cfg.timesteps, sampling_steps, self.cfg.spacing)
        base = cond if self.cfg.residual else 0.0
        y_T = q_sample(torch.zeros_like(noise), self.abar[ts[0]], noise) if self.cfg.residual \
            else noise
        clip = (0.0 - base, 1.0 - base) if self.cfg.clip_x0 else None  # SR in [0, 1]
        y0 = sample(lambda y, t: self.predict(y, t, cond), y_T, self.abar, ts,
                    self.cfg.prediction, clip=clip)
        return (base + y0).clamp(0, 1)

    def image_noise(self, lr: Tensor, seed: int = 0) -> Tensor:
        """The image's x_T [1, 3, sH, sW], which the tiler crops with the LR."""
        g = torch.Generator(device=lr.device).manual_seed(seed)
        h, w = lr.shape[-2:]
        s = self.scale
        return torch.randn((lr.shape[0], 3, s * h, s * w), generator=g, device=lr.device)

    def prepare(self, lr: Tensor, sampling_steps: int | None = None, seed: int = 0) -> TileFn:
        """Tiles come with their crop of ``image_noise`` [B, 3, s th, s tw]."""
        del lr, seed  # the noise comes with the tiles
        n = sampling_steps or self.default_sampling_steps
        return lambda tile, noise: self.super_resolve(tile, noise, n)

    def tile_graph(self) -> TileGraph:
        """The sampler at the default sampling steps on ``max_tile`` px LR tiles (the bicubic
        condition inside is fixed to the tile's size) with the tile's crop of x_T; the 1-bit
        layers run as float convolutions with +-1 kernels."""
        graph = copy.deepcopy(self)
        for m in graph.modules():
            if isinstance(m, BIConv) and isinstance(m.conv, PackedBinaryConv2d):
                m.conv = m.conv.as_float_conv()
        return TileGraph(FixedSteps(graph, self.default_sampling_steps),
                         image_noise=(3, self.scale), static_side=self.max_tile)
