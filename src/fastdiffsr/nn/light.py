"""CPU-light halves of the latent stack (issue 17): an LR encoder on the LR grid and a decoder
whose compute sits at latent resolution.

Edge-SD-SR's decoupled encodings (Hadji, Noroozi et al. 2025, Sec. 3) let the LR encoder
differ from the HR autoencoder's encoder: it only has to map the LR image into the latent
space. Encoding bicubic_s(LR) with the HR encoder costs a pass at HR resolution; this encoder
works on the LR pixels themselves and reaches the latent grid (s / f times the LR's) by
pixel-(un)shuffle. The decoder upsamples by pixel-shuffle (Shi et al. 2016, ESPCN), halving
its width at each x2, so the HR-resolution stages are narrow.

Both are plain residual conv stacks without normalisation: no statistics that differ from
tile to tile, and few memory-bound passes per pixel (what costs on a CPU).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class ConvBlock(nn.Module):
    """[B, C, H, W] -> x + conv3x3(SiLU(conv3x3(x)))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


class LRGridEncoder(nn.Module):
    """LR [B, 3, h, w] in [0, 1] -> diffusion latent [B, C, h s/f, w s/f].

    s >= f: convs on the LR grid, then conv to C (s/f)^2 channels and pixel-shuffle by s/f
    (x4 with f = 4: the LR grid is the latent grid). s < f: pixel-unshuffle by f/s first
    (the x2 teacher at f = 4: [B, 12, h/2, w/2]).
    """

    def __init__(self, channels: int, blocks: int, scale: int, downsample_factor: int,
                 latent_channels: int):
        super().__init__()
        if scale % downsample_factor and downsample_factor % scale:
            raise ValueError(f"scale {scale} and f = {downsample_factor}: one must divide the "
                             "other")
        up = max(scale // downsample_factor, 1)
        down = max(downsample_factor // scale, 1)
        self.unshuffle = nn.PixelUnshuffle(down) if down > 1 else nn.Identity()
        self.conv_in = nn.Conv2d(3 * down * down, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(ConvBlock(channels) for _ in range(blocks)))
        self.conv_out = nn.Conv2d(channels, latent_channels * up * up, 3, padding=1)
        self.shuffle = nn.PixelShuffle(up) if up > 1 else nn.Identity()

    def forward(self, lr: Tensor) -> Tensor:
        h = self.conv_in(self.unshuffle(lr * 2 - 1))
        return self.shuffle(self.conv_out(self.blocks(h)))


class LightDecoder(nn.Module):
    """Latent [B, C, h, w] -> image [B, 3, f h, f w] in about [-1, 1] (``Decoder``'s contract):
    conv_in, ``blocks`` ConvBlocks at latent resolution, then log2(f) x (conv3x3 to 2c, SiLU,
    pixel-shuffle x2: c -> c/2 channels at twice the side), conv3x3 to 3."""

    def __init__(self, channels: int, blocks: int, latent_channels: int, downsample_factor: int):
        super().__init__()
        ups = int(math.log2(downsample_factor))
        if 2**ups != downsample_factor or channels % 2**ups:
            raise ValueError(f"the light decoder needs f a power of 2 and channels divisible by "
                             f"f, got f = {downsample_factor}, channels = {channels}")
        c = channels
        self.conv_in = nn.Conv2d(latent_channels, c, 3, padding=1)
        self.blocks = nn.Sequential(*(ConvBlock(c) for _ in range(blocks)))
        up: list[nn.Module] = []
        for _ in range(ups):
            up += [nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(), nn.PixelShuffle(2)]
            c //= 2
        self.up = nn.Sequential(*up)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv_out(self.up(self.blocks(self.conv_in(z))))
