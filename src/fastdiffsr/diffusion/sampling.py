"""Deterministic DDIM steps (Song et al. 2021) as free functions.

``abar`` is the cumulative product of (1 - beta); index 0 is the first noised step, and
``abar_prev = 1`` denotes the clean sample.
"""

from __future__ import annotations

from torch import Tensor


def ddim_step_x0(x_t: Tensor, x0_hat: Tensor, abar_t: Tensor, abar_prev: Tensor) -> Tensor:
    """One eta = 0 DDIM step from an x0 prediction (DDIM Eq. 12 with sigma_t = 0)."""
    eps_hat = (x_t - abar_t.sqrt() * x0_hat) / (1 - abar_t).sqrt()
    return abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps_hat
