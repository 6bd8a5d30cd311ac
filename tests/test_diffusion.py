"""Diffusion core against diffusers' DDIMScheduler: schedules, steps, timesteps, the full loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import torch

from fastdiffsr.diffusion.sampling import (
    ddim_step,
    ddim_timesteps,
    pred_to_x0_eps,
    q_sample,
    sample,
    v_target,
)
from fastdiffsr.diffusion.schedules import (
    alphas_cumprod,
    cosine_betas,
    linear_betas,
    scaled_linear_betas,
)

if TYPE_CHECKING:
    import diffusers

T = 1000
KINDS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
SPACINGS = ("leading", "trailing")


def _scheduler(kind: str = "eps", spacing: str = "leading", clip_sample: bool = False, **kw
               ) -> diffusers.DDIMScheduler:
    """diffusers' DDIMScheduler, the reference; a test that needs it skips alone without it."""
    ddim = pytest.importorskip("diffusers").DDIMScheduler
    return ddim(
        num_train_timesteps=T,
        prediction_type=KINDS[kind],
        timestep_spacing=spacing,
        clip_sample=clip_sample,
        set_alpha_to_one=True,
        steps_offset=0,
        **kw,
    )


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(
    ("name", "betas"),
    [
        ("linear", linear_betas(T, 0.0001, 0.02)),
        ("scaled_linear", scaled_linear_betas(T)),
        ("squaredcos_cap_v2", cosine_betas(T)),
    ],
)
def test_schedules_match_diffusers(name: str, betas: torch.Tensor) -> None:
    kw = {"beta_start": 0.00085, "beta_end": 0.012} if name == "scaled_linear" else {}
    ref = _scheduler(beta_schedule=name, **kw)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    torch.testing.assert_close(betas, ref.betas.double(), rtol=0, atol=1e-6)
    abar = alphas_cumprod(betas)
    torch.testing.assert_close(abar, ref.alphas_cumprod.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [1, 4, 50])
def test_timesteps_match_diffusers(spacing: str, n: int) -> None:
    ref = _scheduler(spacing=spacing)
    ref.set_timesteps(n)
    assert ddim_timesteps(T, n, spacing) == ref.timesteps.tolist()


def test_one_step_timesteps() -> None:
    assert ddim_timesteps(T, 1, "leading") == [0]  # diffusers' default: t = 0 (!)
    assert ddim_timesteps(T, 1, "trailing") == [T - 1]  # from pure noise


def test_trailing_always_has_n_steps() -> None:
    # diffusers' float np.arange gives n + 1 steps ending in -1 for e.g. n = 61; we do not
    for n in (3, 7, 61, 103):
        ts = ddim_timesteps(T, n, "trailing")
        assert len(set(ts)) == n and min(ts) >= 0 and ts[0] == T - 1
        ref = _scheduler(spacing="trailing")
        ref.set_timesteps(n)
        assert ts == ref.timesteps[:n].tolist()


def _diffusers_prev(t: int, n: int, abar: torch.Tensor) -> torch.Tensor:
    """The abar_prev diffusers' step uses: abar[t - T // n], or final_alpha_cumprod = 1."""
    prev = t - T // n
    return abar[prev] if prev >= 0 else torch.ones((), dtype=abar.dtype)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_ddim_step_matches_diffusers(kind: str, spacing: str) -> None:
    n = 10
    ref = _scheduler(kind, spacing)
    ref.set_timesteps(n)
    abar = ref.alphas_cumprod.double()
    for i, t in enumerate(ref.timesteps.tolist()[::3] + [ref.timesteps[-1].item()]):
        x, pred, noise = (_randn(2, 3, 4, 4, seed=10 * i + k) for k in range(3))
        abar_prev = _diffusers_prev(t, n, abar)
        for eta in (0.0, 0.7):
            want = ref.step(pred, t, x, eta=eta, variance_noise=noise).prev_sample
            got = ddim_step(x, pred, abar[t], abar_prev, kind, eta=eta, noise=noise)
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_ddim_step_clip_matches_diffusers_clip_sample(kind: str) -> None:
    """``clip`` is diffusers' ``clip_sample``: x0_hat clamped, eps_hat kept."""
    n, r = 10, 0.5
    ref = _scheduler(kind, clip_sample=True, clip_sample_range=r)
    ref.set_timesteps(n)
    abar = ref.alphas_cumprod.double()
    for i, t in enumerate(ref.timesteps.tolist()[::3]):
        x, pred, noise = (3 * _randn(2, 3, 4, 4, seed=10 * i + k) for k in range(3))
        abar_prev = _diffusers_prev(t, n, abar)
        for eta in (0.0, 0.7):
            want = ref.step(pred, t, x, eta=eta, variance_noise=noise).prev_sample
            got = ddim_step(x, pred, abar[t], abar_prev, kind, eta, noise, clip=(-r, r))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            unclipped = ddim_step(x, pred, abar[t], abar_prev, kind, eta, noise)
            assert (got - unclipped).abs().max() > 1e-3


def test_ddim_step_float32_and_batched_abar() -> None:
    ref = _scheduler("v")
    ref.set_timesteps(4)  # [750, 500, 250, 0]
    abar = ref.alphas_cumprod
    x, pred = (_randn(2, 3, 4, 4, seed=k, dtype=torch.float32) for k in range(2))
    want = torch.cat(
        [ref.step(pred[i : i + 1], t, x[i : i + 1]).prev_sample for i, t in enumerate((750, 250))]
    )
    got = ddim_step(x, pred, abar[[750, 250]], abar[[500, 0]], "v")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_eta_needs_noise() -> None:
    x = _randn(1, 4, seed=0)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, 0.5, 0.9, "eps", eta=1.0)


def _toy(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    assert t.dtype == torch.long and t.shape == (x.shape[0],)
    return 0.5 * x + 1e-4 * t.view(-1, 1, 1, 1)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize(("kind", "eta"), [("eps", 0.0), ("x0", 0.0), ("v", 0.0), ("eps", 1.0)])
def test_sample_matches_manual_diffusers_loop(kind: str, eta: float, spacing: str) -> None:
    n, shape = 4, (2, 3, 4, 4)
    ref = _scheduler(kind, spacing)
    ref.set_timesteps(n)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen)
    for t in ref.timesteps:
        pred = _toy(x, t.expand(shape[0]))
        noise = torch.randn(shape, generator=gen) if eta > 0 else None
        x = ref.step(pred, t, x, eta=eta, variance_noise=noise).prev_sample
    got = sample(
        _toy,
        shape,
        ref.alphas_cumprod,
        ddim_timesteps(T, n, spacing),
        kind,
        torch.Generator().manual_seed(7),
        eta=eta,
    )
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-4)


def test_sample_from_given_x_T() -> None:
    abar = alphas_cumprod(linear_betas(T, 0.0001, 0.02))
    x_T = _randn(2, 3, 4, 4, seed=3)
    ts = ddim_timesteps(T, 1, "trailing")
    got = sample(lambda x, t: torch.zeros_like(x), x_T, abar, ts, "eps")
    torch.testing.assert_close(got, x_T / abar[T - 1].sqrt())  # one step to abar_prev = 1


def test_seeds() -> None:
    abar = alphas_cumprod(cosine_betas(T))
    ts = ddim_timesteps(T, 4, "trailing")

    def run(seed: int) -> torch.Tensor:
        return sample(_toy, (2, 3, 4, 4), abar, ts, "v", torch.Generator().manual_seed(seed), 0.5)

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


def test_round_trips_and_diffusers_helpers() -> None:
    ref = _scheduler()
    abar = ref.alphas_cumprod.double()
    t = torch.tensor([10, 500, 990])
    x0, eps = _randn(3, 2, 4, 4, seed=0), _randn(3, 2, 4, 4, seed=1)
    x_t = q_sample(x0, abar[t], eps)
    v = v_target(x0, eps, abar[t])
    torch.testing.assert_close(x_t, ref.add_noise(x0, eps, t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, ref.get_velocity(x0, eps, t), rtol=1e-5, atol=1e-5)
    for kind, pred in (("eps", eps), ("x0", x0), ("v", v)):
        x0_hat, eps_hat = pred_to_x0_eps(pred, x_t, abar[t], kind)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)
    # scalar abar broadcasts too
    a = abar[500]
    torch.testing.assert_close(
        pred_to_x0_eps(v_target(x0, eps, a), q_sample(x0, a, eps), a, "v"), (x0, eps)
    )
    with pytest.raises(ValueError, match="kind"):
        pred_to_x0_eps(eps, x_t, abar[t], "score")  # type: ignore[arg-type]
