"""Noise schedules as pure functions returning float64 tensors of shape [T]."""

from __future__ import annotations

import torch
from torch import Tensor


def linear_betas(steps: int, start: float, end: float) -> Tensor:
    """beta_t linearly spaced from ``start`` to ``end`` (DDPM, Ho et al. 2020, Sec. 4)."""
    return torch.linspace(start, end, steps, dtype=torch.float64)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s) (DDPM Eq. 4 notation)."""
    return torch.cumprod(1.0 - betas, dim=0)
