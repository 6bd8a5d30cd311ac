"""Forward noising, parameterisation conversions and DDIM sampling as free functions.

``abar`` is the cumulative product of (1 - beta) (``schedules.alphas_cumprod``); index 0 is
the first noised step, and ``abar_prev = 1`` denotes the clean sample. Every ``abar_*``
argument is a scalar tensor (or float) or a [B] tensor, broadcast over x's trailing dims and
cast to x's dtype. Papers: DDPM (Ho et al. 2020), DDIM (Song et al. 2021), v-prediction
(Salimans & Ho 2022).

Drift (Edge-SD-SR's forward process, Hadji, Noroozi et al. 2025): with ``drift = d`` (a tensor of
x's shape) the forward process runs from x0 toward d instead of toward 0,
x_t = sqrt(abar_t) x0 + (1 - sqrt(abar_t)) d + sqrt(1 - abar_t) eps. It is DDPM's process on
y = x - d, so each formula below holds for c_t = x_t - (1 - sqrt(abar_t)) d = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps in place of x_t; ``drift=None`` is d = 0, the plain process.

Timesteps and the final step mirror diffusers' ``DDIMScheduler`` with ``steps_offset=0``,
``set_alpha_to_one=True``, ``clip_sample=False``, ``thresholding=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

Kind = Literal["eps", "x0", "v"]  # what the network predicts (diffusers: epsilon/sample/v)
Spacing = Literal["leading", "trailing"]
Denoise = Callable[[Tensor, Tensor], Tensor]  # (x_t [B, ...], t [B] long) -> prediction


def _bcast(a: Tensor | float, x: Tensor) -> Tensor:
    """``a`` (scalar or [B]) on x's dtype and device, shaped [B, 1, ...] to broadcast over x."""
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def q_sample(x0: Tensor, abar_t: Tensor | float, noise: Tensor, drift: Tensor | None = None
             ) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, a draw of q(x_t | x0) (DDPM Eq. 4); with a
    drift d, x_t = sqrt(abar_t) x0 + (1 - sqrt(abar_t)) d + sqrt(1 - abar_t) eps."""
    a = _bcast(abar_t, x0)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return x_t if drift is None else x_t + (1 - a.sqrt()) * drift


def v_target(x0: Tensor, eps: Tensor, abar_t: Tensor | float) -> Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022, Sec. 4 and App. D)."""
    a = _bcast(abar_t, x0)
    return a.sqrt() * eps - (1 - a).sqrt() * x0


def pred_to_x0_eps(
    pred: Tensor, x_t: Tensor, abar_t: Tensor | float, kind: Kind
) -> tuple[Tensor, Tensor]:
    """(x0_hat, eps_hat) from a network output of the given ``kind``, given x_t and abar_t.

    eps: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) (DDPM Eq. 4 inverted; DDIM Eq. 9).
    x0:  eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar) (same relation, solved for eps).
    v:   x0 = sqrt(abar) x_t - sqrt(1 - abar) v, eps = sqrt(abar) v + sqrt(1 - abar) x_t
         (Salimans & Ho 2022, App. D: with alpha^2 + sigma^2 = 1, (x_t, v) is a rotation of
         (x0, eps)).
    """
    a = _bcast(abar_t, x_t)
    sa, sb = a.sqrt(), (1 - a).sqrt()
    if kind == "eps":
        return (x_t - sb * pred) / sa, pred
    if kind == "x0":
        return pred, (x_t - sa * pred) / sb
    if kind == "v":
        return sa * x_t - sb * pred, sa * pred + sb * x_t
    raise ValueError(f"unknown prediction kind {kind!r}; expected 'eps', 'x0' or 'v'")


def ddim_sigma(abar_t: Tensor | float, abar_prev: Tensor | float, eta: float) -> Tensor:
    """sigma_t(eta) = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).

    DDIM Eq. 16: eta = 0 is deterministic DDIM, eta = 1 the DDPM posterior variance.
    """
    a_t, a_p = torch.as_tensor(abar_t), torch.as_tensor(abar_prev)
    return eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).sqrt()


def ddim_step(
    x_t: Tensor,
    pred: Tensor,
    abar_t: Tensor | float,
    abar_prev: Tensor | float,
    kind: Kind,
    eta: float = 0.0,
    noise: Tensor | None = None,
    drift: Tensor | None = None,
    clip: tuple[float | Tensor, float | Tensor] | None = None,
) -> Tensor:
    """One DDIM step x_t -> x_prev (DDIM Eq. 12, sigma_t from Eq. 16).

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_t^2) eps_hat + sigma_t noise.
    ``noise`` (standard normal, x's shape) is required when eta > 0; pass it explicitly so the
    step stays a pure function (diffusers' ``variance_noise``). ``clip = (lo, hi)`` (floats, or
    tensors of x's shape for a per-pixel range) clamps x0_hat to the data range and keeps
    eps_hat (diffusers' ``clip_sample``, whose range is (-r, r), with
    ``use_clipped_model_output=False``).

    With a drift d the step is DDIM's on y = x - d (whose process is DDPM's), mapped back:

        eps_hat = (x_t - sqrt(abar_t) x0_hat - (1 - sqrt(abar_t)) d) / sqrt(1 - abar_t)
        x_prev  = sqrt(abar_prev) x0_hat + (1 - sqrt(abar_prev)) d
                  + sqrt(1 - abar_prev - sigma_t^2) eps_hat + sigma_t noise

    i.e. the mean of q(x_prev | x_t, x0_hat) gains the (1 - sqrt(abar_prev)) d term of the
    marginal at abar_prev; at abar_prev = 1 the step returns x0_hat exactly.
    """
    a_p = _bcast(abar_prev, x_t)
    if drift is not None:
        x_t = x_t - (1 - _bcast(abar_t, x_t).sqrt()) * drift  # c_t: the drift taken out
    x0_hat, eps_hat = pred_to_x0_eps(pred, x_t, abar_t, kind)
    if clip is not None:
        x0_hat = x0_hat.clamp(*clip)
    if eta == 0:
        x_prev = a_p.sqrt() * x0_hat + (1 - a_p).sqrt() * eps_hat
    elif noise is None:
        raise ValueError("ddim_step with eta > 0 needs `noise`")
    else:
        sigma = _bcast(ddim_sigma(_bcast(abar_t, x_t), a_p, eta), x_t)
        direction = (1 - a_p - sigma**2).clamp(min=0).sqrt() * eps_hat
        x_prev = a_p.sqrt() * x0_hat + direction + sigma * noise
    return x_prev if drift is None else x_prev + (1 - a_p.sqrt()) * drift


def ddim_timesteps(timesteps: int, sampling_steps: int, spacing: Spacing = "leading") -> list[int]:
    """The descending timesteps (Python ints: constants when a sampler is exported) to visit in
    n = ``sampling_steps`` sampling steps of a diffusion of T = ``timesteps``.

    Same as diffusers ``DDIMScheduler(timestep_spacing=..., steps_offset=0).set_timesteps``
    (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Tab. 2):

    * "leading" (diffusers' default): t_i = i * (T // n), i = n-1 .. 0. Always ends at t = 0
      but starts at (n - 1)(T // n) < T - 1 (unless n = T), so it never sees pure noise: one
      step gives [0] (denoise an almost clean input), 4 of 1000 give [750, 500, 250, 0].
    * "trailing": t_i = round(T - i T / n) - 1, i = 0 .. n-1. Always starts at t = T - 1:
      one step gives [T - 1], the one-step-from-pure-noise case (YONOS-SR); 4 of 1000 give
      [999, 749, 499, 249]. Computed per index, so it always has exactly n entries (diffusers'
      float ``np.arange`` yields n + 1, ending in -1, for some n, e.g. T = 1000, n = 61).
    """
    n, T = sampling_steps, timesteps
    if not 1 <= n <= T:
        raise ValueError(f"sampling_steps must be in [1, {T}], got {n}")
    if spacing == "leading":
        return [i * (T // n) for i in reversed(range(n))]
    if spacing == "trailing":
        return [round(T - i * (T / n)) - 1 for i in range(n)]  # round half to even, as torch
    raise ValueError(f"unknown spacing {spacing!r}; expected 'leading' or 'trailing'")


def sample(
    denoise: Denoise,
    shape_or_x_T: Sequence[int] | Tensor,
    abar: Tensor,
    timesteps: Tensor | Sequence[int],
    kind: Kind,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    drift: Tensor | None = None,
    clip: tuple[float | Tensor, float | Tensor] | None = None,
) -> Tensor:
    """The N-step DDIM sampler: x_T -> x_0 over ``timesteps`` (descending, e.g. ddim_timesteps).

    Starts from ``shape_or_x_T`` if a tensor, else from x_T ~ N(0, I) of that shape drawn from
    ``generator`` (float32, on the generator's device). Each step runs ``denoise(x_t, t [B])``
    and ``ddim_step`` to the next timestep in the list; the last step goes to abar_prev = 1,
    i.e. to the clean sample (diffusers' ``final_alpha_cumprod`` with ``set_alpha_to_one=True``).
    With eta > 0 the step noise is also drawn from ``generator``, after each ``denoise`` call,
    so a seeded generator makes the whole chain deterministic. Runs with the caller's grad mode.
    ``drift`` (x's shape) samples the drifted process and ``clip`` clamps every x0_hat (both
    passed to each ``ddim_step``).

    diffusers' ``step`` instead takes abar_prev = abar[t - T // n]; both agree for "leading"
    spacing, and for "trailing" when n divides T.
    """
    x = _initial_noise(shape_or_x_T, generator)
    one = torch.ones((), dtype=abar.dtype, device=abar.device)
    ts = timesteps.tolist() if isinstance(timesteps, Tensor) else list(timesteps)
    for t, t_prev in zip(ts, [*ts[1:], None], strict=True):
        pred = denoise(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        abar_prev = one if t_prev is None else abar[t_prev]
        noise = None if eta == 0 else _randn(x.shape, generator, x.dtype, x.device)
        x = ddim_step(x, pred, abar[t], abar_prev, kind, eta, noise, drift, clip)
    return x


def _initial_noise(shape_or_x_T: Sequence[int] | Tensor, gen: torch.Generator | None) -> Tensor:
    if isinstance(shape_or_x_T, Tensor):
        return shape_or_x_T
    device = gen.device if gen is not None else None
    return _randn(tuple(shape_or_x_T), gen, torch.float32, device)


def _randn(
    shape: Sequence[int],
    gen: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | None,
) -> Tensor:
    return torch.randn(tuple(shape), generator=gen, dtype=dtype, device=device)
