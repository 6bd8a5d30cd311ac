"""Latent-diffusion UNet (Ho et al. 2020; Rombach et al. 2022), without text conditioning.

The network maps a latent [B, in, h, w] and timesteps t [B] to [B, out, h, w] (a noise,
velocity or clean-latent estimate: the caller decides). It conditions on nothing but t:
super-resolution conditions by concatenation, done by the caller, e.g.
``unet(torch.cat([z_t, z_lr], 1), t)`` with ``in_channels = 2 C`` (as SD's x4 upscaler).

Layout as SD-1.5's ``UNet2DConditionModel``:

* t -> sinusoidal embedding (``base_channels`` wide) -> Linear, SiLU, Linear to
  ``base_channels * time_embed_mult``, added inside every ResBlock.
* conv_in; per level ``blocks_per_level`` x (ResBlock [+ SpatialTransformer at
  ``attention_levels``]) then a stride-2 conv (not after the last level); every output is kept
  as a skip.
* mid: ResBlock, SpatialTransformer, ResBlock.
* per level from the deepest ``blocks_per_level + 1`` x (ResBlock on cat(h, skip)
  [+ SpatialTransformer]) then nearest x2 + conv (not after level 0); GN, SiLU, conv_out.

With ``unshuffle = u`` > 1 (not SD's; for CPU budgets) the levels run at 1/u of the input's side
on pixel-unshuffled input, and the output is pixel-shuffled back.

A SpatialTransformer is SD's: GN, 1x1 conv, ``transformer_depth`` pre-LayerNorm transformer
blocks over the pixels (self-attention, feed-forward with GEGLU, Shazeer 2020), 1x1 conv, plus
the input. SD's cross-attention to text has no counterpart here; ``extra_self_attention`` puts
a second self-attention layer in its place, to match SD's depth and size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_ranges
from .layers import (
    Downsample,
    ResBlock,
    SelfAttention,
    Stage,
    Upsample,
    check_divisible,
    from_tokens,
    group_norm,
    sinusoidal_embedding,
    to_tokens,
)


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 8  # z_t concatenated with the LR latent
    out_channels: int = 4
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4)  # one per level
    blocks_per_level: int = 2
    attention_levels: tuple[int, ...] = (2,)  # levels with a SpatialTransformer; mid always has one
    heads: int = 4
    groups: int = 16  # GroupNorm groups
    dropout: float = 0.0  # inside the ResBlocks
    time_embed_mult: int = 4
    transformer_depth: int = 1
    extra_self_attention: bool = False  # a second self-attention where SD cross-attends to text
    unshuffle: int = 1  # u: the levels run on pixel-unshuffle(x, u), [B, in u^2, h/u, w/u]

    RANGES: ClassVar = {"in_channels": (1, 1024), "out_channels": (1, 1024),
                        "base_channels": (1, 2048), "channel_mults": (1, 64),
                        "blocks_per_level": (1, 16), "attention_levels": (0, 7),
                        "heads": (1, 64), "groups": (1, 1024), "dropout": (0, 1),
                        "time_embed_mult": (1, 16), "transformer_depth": (1, 16),
                        "unshuffle": (1, 16)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)
        if not 1 <= len(self.channel_mults) <= 8:
            raise ValueError(f"1 to 8 levels, got channel_mults = {self.channel_mults}")

    @property
    def downsample_factor(self) -> int:
        return self.unshuffle * 2 ** (len(self.channel_mults) - 1)


# SD-1.5's UNet shape without text: 8 heads per layer, a second self-attention in place of the
# cross-attention, input z_t + LR latent: 865,144,004 parameters (SD-1.5: 859,520,964;
# without the extra attention 815,544,964)
SD_UNET = UNetConfig(
    in_channels=8,
    out_channels=4,
    base_channels=320,
    channel_mults=(1, 2, 4, 4),
    blocks_per_level=2,
    attention_levels=(0, 1, 2),
    heads=8,
    groups=32,
    time_embed_mult=4,
    transformer_depth=1,
    extra_self_attention=True,
)


class GEGLU(nn.Module):
    """Feed-forward [B, N, C] -> [B, N, C]: Linear to 2 x 4C, a * GELU(gate), Linear 4C -> C."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-LN block on tokens [B, N, C]: x += Attn(LN x) [twice if extra]; x += FF(LN x)."""

    def __init__(self, dim: int, heads: int, extra_self_attention: bool):
        super().__init__()
        n_attn = 2 if extra_self_attention else 1
        self.attn_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_attn))
        self.attns = nn.ModuleList(SelfAttention(dim, heads) for _ in range(n_attn))
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = GEGLU(dim)

    def forward(self, x: Tensor) -> Tensor:
        for norm, attn in zip(self.attn_norms, self.attns, strict=True):
            x = x + attn(norm(x))
        return x + self.ff(self.ff_norm(x))


class SpatialTransformer(nn.Module):
    """[B, C, H, W] -> [B, C, H, W]: x + conv1x1(transformer blocks(conv1x1(GN x)))."""

    def __init__(self, channels: int, cfg: UNetConfig):
        super().__init__()
        self.norm = group_norm(channels, cfg.groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(channels, cfg.heads, cfg.extra_self_attention)
                for _ in range(cfg.transformer_depth)
            )
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        tokens = self.blocks(to_tokens(self.proj_in(self.norm(x))))
        return x + self.proj_out(from_tokens(tokens, h, w))


class UNetBlock(nn.Module):
    """ResBlock (with the time embedding) then an optional SpatialTransformer."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, attention: bool, cfg: UNetConfig):
        super().__init__()
        self.res = ResBlock(c_in, c_out, cfg.groups, emb_dim, cfg.dropout)
        self.attn = SpatialTransformer(c_out, cfg) if attention else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """(x [B, in, h, w], t [B]) -> [B, out, h, w]; h, w multiples of 2^(levels - 1)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        emb_dim = cfg.base_channels * cfg.time_embed_mult
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        u2 = cfg.unshuffle**2
        self.conv_in = nn.Conv2d(cfg.in_channels * u2, widths[0], 3, padding=1)

        c, skips = widths[0], [widths[0]]  # skips: channels of every kept activation
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            blocks: list[nn.Module] = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(UNetBlock(c, width, emb_dim, i in cfg.attention_levels, cfg))
                c = width
                skips.append(c)
            last = i == len(widths) - 1
            self.down.append(Stage(blocks, None if last else Downsample(c)))
            if not last:
                skips.append(c)

        self.mid_in = UNetBlock(c, c, emb_dim, True, cfg)
        self.mid_out = ResBlock(c, c, cfg.groups, emb_dim, cfg.dropout)

        self.up = nn.ModuleList()
        for i in reversed(range(len(widths))):
            blocks = []
            for _ in range(cfg.blocks_per_level + 1):
                c_in = c + skips.pop()
                blocks.append(UNetBlock(c_in, widths[i], emb_dim, i in cfg.attention_levels, cfg))
                c = widths[i]
            self.up.append(Stage(blocks, Upsample(c) if i > 0 else None))

        self.norm_out = group_norm(c, cfg.groups)
        self.conv_out = nn.Conv2d(c, cfg.out_channels * u2, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        check_divisible(x, self.cfg.downsample_factor)
        emb = self.time_mlp(sinusoidal_embedding(t, self.cfg.base_channels).to(x.dtype))
        h = self.conv_in(F.pixel_unshuffle(x, self.cfg.unshuffle))
        skips = [h]
        for level in self.down:
            for block in level.blocks:
                h = block(h, emb)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self.mid_out(self.mid_in(h, emb), emb)
        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if level.resample is not None:
                h = level.resample(h)
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), self.cfg.unshuffle)
