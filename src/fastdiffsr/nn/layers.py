"""Blocks shared by the latent-diffusion networks (``autoencoder`` and ``unet``).

Stable Diffusion's building blocks (Rombach et al. 2022, App. G), written once: GroupNorm
(Wu & He 2018) and SiLU (Elfwing et al. 2018) pre-activation residual blocks (He et al. 2016)
with an optional timestep embedding, stride-2 / nearest-neighbour resamplers, multi-head
self-attention (Vaswani et al. 2017) and the sinusoidal timestep embedding. Feature maps are
[B, C, H, W]; attention works on tokens [B, N, C].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Timesteps t [B] (long or float) -> [B, dim] (Vaswani et al. 2017, Sec. 3.5).

    Frequencies max_period^(-k / (dim/2)), k = 0 .. dim/2 - 1; cosines first, then sines
    (SD's ``flip_sin_to_cos``).
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    angles = t.float()[:, None] * torch.exp(-math.log(max_period) * k / half)[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """[B, C_in, H, W] (+ embedding [B, D]) -> [B, C_out, H, W].

    GN, SiLU, conv3x3, + Linear(SiLU(emb)) per channel (DDPM's plain add, Ho et al. 2020),
    GN, SiLU, dropout, conv3x3, plus the input (through a 1x1 conv when C_in != C_out).
    """

    def __init__(
        self, c_in: int, c_out: int, groups: int, emb_dim: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, c_out) if emb_dim is not None else None
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this ResBlock needs an embedding")
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class Downsample(nn.Module):
    """[B, C, H, W] -> [B, C, H/2, W/2]: a stride-2 conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """[B, C, H, W] -> [B, C, 2H, 2W]: nearest-neighbour x2 then conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SelfAttention(nn.Module):
    """Multi-head self-attention, tokens [B, N, C] -> [B, N, C] (Vaswani et al. 2017, Sec. 3.2)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{dim} channels do not split into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, N, C/heads]
        return self.out(y.transpose(1, 2).reshape(b, n, c))


def to_tokens(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, H*W, C]: every pixel a token."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(x: Tensor, height: int, width: int) -> Tensor:
    """[B, H*W, C] -> [B, C, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class PixelAttention(nn.Module):
    """x + SelfAttention(GN(x)) over the H*W pixels: [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, channels: int, groups: int, heads: int = 1):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.attn = SelfAttention(channels, heads, qkv_bias=True)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        return x + from_tokens(self.attn(to_tokens(self.norm(x))), h, w)


class Stage(nn.Module):
    """One resolution level: ``blocks`` at one size, then ``resample`` (None: keep the size)."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


def check_divisible(x: Tensor, factor: int) -> None:
    """Raise ValueError unless both spatial sides of x [B, C, H, W] are multiples of factor."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"spatial size {h}x{w} must be a multiple of {factor}")
