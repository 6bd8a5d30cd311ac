"""Forward noising and deterministic DDIM steps (Song et al. 2021) as free functions.

``abar`` is the cumulative product of (1 - beta); index 0 is the first noised step, and
``abar_prev = 1`` denotes the clean sample.
"""

from __future__ import annotations

from torch import Tensor


def q_sample(x0: Tensor, abar_t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (DDPM Eq. 4); abar_t broadcasts over x0."""
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def ddim_step_x0(x_t: Tensor, x0_hat: Tensor, abar_t: Tensor, abar_prev: Tensor) -> Tensor:
    """One eta = 0 DDIM step from an x0 prediction (DDIM Eq. 12 with sigma_t = 0)."""
    eps_hat = (x_t - abar_t.sqrt() * x0_hat) / (1 - abar_t).sqrt()
    return abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps_hat
