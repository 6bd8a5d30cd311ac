"""PSNR and SSIM on the Y channel with border crop: the SR literature's evaluation protocol.

Images are 8-bit-rounded RGB in [0, 1]; Y is BT.601 (16..235) on the 0..255 scale, kept in float
(as BasicSR's ``calculate_psnr(..., test_y_channel=True)``); ``scale`` pixels are cropped from each
border; SSIM uses Wang et al.'s 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255,
over the 'valid' region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def quantize(x: Tensor) -> Tensor:
    """Round to the nearest 8-bit level (values stay in [0, 1])."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def rgb_to_y(x: Tensor) -> Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> [B, 1, H, W] Y in [16, 235]; gray [B, 1, H, W] is R=G=B."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    w = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return 16.0 + (x * w).sum(dim=1, keepdim=True)


def _prepare(sr: Tensor, hr: Tensor, crop: int) -> tuple[Tensor, Tensor]:
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch: sr {tuple(sr.shape)} vs hr {tuple(hr.shape)}")
    ys, yh = rgb_to_y(quantize(sr.double())), rgb_to_y(quantize(hr.double()))
    if crop > 0:
        ys, yh = ys[..., crop:-crop, crop:-crop], yh[..., crop:-crop, crop:-crop]
    return ys, yh


def psnr_y(sr: Tensor, hr: Tensor, crop: int) -> Tensor:
    """PSNR in dB per image ([B]) between Y channels, ``crop`` border pixels removed."""
    ys, yh = _prepare(sr, hr, crop)
    mse = ((ys - yh) ** 2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_y(sr: Tensor, hr: Tensor, crop: int) -> Tensor:
    """SSIM per image ([B]) between Y channels (Wang et al. 2004, Eq. 13, mean over the map)."""
    x, y = _prepare(sr, hr, crop)
    win = _gaussian_window().to(x.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mu_x**2
    syy = F.conv2d(y * y, win) - mu_y**2
    sxy = F.conv2d(x * y, win) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(1, 2, 3))
