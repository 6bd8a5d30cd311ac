"""Noise schedules as pure functions returning float64 tensors of shape [T].

Each matches the ``beta_schedule`` of the same name in diffusers' schedulers ("linear",
"scaled_linear", "squaredcos_cap_v2"), up to diffusers computing them in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear_betas(timesteps: int, start: float, end: float) -> Tensor:
    """beta_t linearly spaced from ``start`` to ``end`` (DDPM, Ho et al. 2020, Sec. 4)."""
    return torch.linspace(start, end, timesteps, dtype=torch.float64)


def scaled_linear_betas(timesteps: int, start: float = 0.00085, end: float = 0.012) -> Tensor:
    """sqrt(beta_t) linearly spaced, then squared: the latent / Stable Diffusion schedule.

    Rombach et al. 2022 (LDM) use it in their configs; the paper states no equation for it.
    """
    return torch.linspace(math.sqrt(start), math.sqrt(end), timesteps, dtype=torch.float64) ** 2


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17), diffusers' "squaredcos_cap_v2".

    abar(t) = f(t) / f(0) with f(t) = cos^2((t / T + s) / (1 + s) * pi / 2), and
    beta_t = min(1 - abar(t + 1) / abar(t), max_beta) (their Sec. 3.2: the clip avoids the
    singularity at t = T); f(0) cancels in the ratio.
    """
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s) (DDPM Eq. 4 notation)."""
    return torch.cumprod(1.0 - betas, dim=0)
