"""The real-world degradation model: sizes, range, determinism, and each operation seen on a
test pattern."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastdiffsr.data.degradations import (
    NAMED,
    Degradation,
    Stage,
    blur,
    degrade,
    gaussian_kernel,
    gaussian_noise,
    jpeg,
    plateau_kernel,
    poisson_noise,
    random_kernel,
    resize,
    sinc_kernel,
)
from fastdiffsr.resize import imresize


def pattern(h: int = 96, w: int = 80) -> torch.Tensor:
    """Smooth ramps plus a sharp checkerboard corner: edges, flats and fine detail."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    checker = ((torch.arange(h)[:, None] // 2 + torch.arange(w)[None] // 2) % 2).float()
    base = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.2 * xx * yy])
    base[:, : h // 2, : w // 2] = 0.25 + 0.5 * checker[: h // 2, : w // 2]
    return base[None]


def high_freq(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())


@pytest.mark.parametrize(("h", "w", "scale"), [(96, 80, 4), (97, 83, 4), (64, 64, 2), (30, 45, 3)])
def test_sizes_range_and_8_bit_levels(h, w, scale):
    for seed in range(4):
        lr = degrade(pattern(h, w), scale, seed)
        assert lr.shape == (1, 3, h // scale, w // scale)
        assert lr.min() >= 0 and lr.max() <= 1
        assert torch.equal(lr, torch.round(lr * 255) / 255)


def test_a_pure_function_of_image_and_seed():
    hr = pattern()
    assert torch.equal(degrade(hr, 4, 7), degrade(hr.clone(), 4, 7))
    assert not torch.equal(degrade(hr, 4, 7), degrade(hr, 4, 8))
    for fn in NAMED.values():
        assert torch.equal(fn(hr, 4, 1), fn(hr, 4, 1))


def test_kernels_are_normalised_and_shaped_as_their_formulas():
    iso = gaussian_kernel(21, 2.0, 2.0, 0.0)
    assert math.isclose(iso.sum(), 1) and np.allclose(iso, iso.T) and np.allclose(iso, iso[::-1])
    aniso = gaussian_kernel(21, 3.0, 0.5, 0.0)  # wide along x, narrow along y
    assert aniso[10].sum() > 3 * aniso[:, 10].sum()
    plateau = plateau_kernel(21, 2.0, 2.0, 0.0, 2.0)
    generalized = gaussian_kernel(21, 2.0, 2.0, 0.0, 4.0)  # beta > 1: flatter top, sharper fall
    assert generalized[10, 11] / generalized[10, 10] > iso[10, 11] / iso[10, 10]
    assert plateau[10, 20] / plateau[10, 10] > iso[10, 20] / iso[10, 10]  # heavy tails
    sinc = sinc_kernel(21, math.pi / 3)
    assert math.isclose(sinc.sum(), 1) and sinc.min() < 0  # negative lobes: ringing
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = random_kernel(Stage(), rng)
        assert k.shape == (21, 21) and math.isclose(k.sum(), 1, rel_tol=1e-6)


def test_blur_removes_detail_and_keeps_flat_areas():
    x = pattern()
    y = blur(x, gaussian_kernel(21, 2.0, 2.0, 0.0))
    assert y.shape == x.shape and high_freq(y) < 0.5 * high_freq(x)
    flat = torch.full((1, 3, 40, 40), 0.4)
    assert torch.allclose(blur(flat, sinc_kernel(21, 1.0)), flat, atol=1e-5)


def test_resize_modes_reach_the_size():
    for mode in ("area", "bilinear", "bicubic"):
        assert resize(pattern(), (31, 17), mode).shape == (1, 3, 31, 17)


def test_bilinear_is_torchs_and_no_resize_depends_on_the_thread_count():
    x = torch.rand(1, 3, 300, 290, generator=torch.Generator().manual_seed(0))
    sizes = ((117, 131), (360, 350), (300, 97))
    for size in sizes:
        torchs = torch.nn.functional.interpolate(x, size=size, mode="bilinear",
                                                 align_corners=False)
        # within 0.03 of an 8-bit level: torch computes the source coordinate in float32
        assert torch.allclose(resize(x, size, "bilinear"), torchs, atol=1e-4)
    threads, outs = torch.get_num_threads(), []
    try:
        for n in (1, 2):  # torch's own bilinear differed between these two (AMD EPYC, AVX2)
            torch.set_num_threads(n)
            outs.append([resize(x, size, mode) for size in sizes
                         for mode in ("area", "bilinear", "bicubic")])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


def test_gaussian_noise_has_its_sigma_and_gray_noise_is_shared():
    rng = np.random.default_rng(0)
    x = torch.full((1, 3, 128, 128), 0.5)
    noise = gaussian_noise(x, 10.0, False, rng)
    assert abs(float(noise.std()) * 255 - 10) < 0.3
    assert not torch.equal(noise[:, 0], noise[:, 1])
    gray = gaussian_noise(x, 10.0, True, rng)
    assert gray.shape[1] == 1  # broadcast over the channels: the same in each


def test_poisson_noise_grows_with_brightness():
    rng = np.random.default_rng(0)
    dark, bright = torch.full((1, 3, 96, 96), 0.05), torch.full((1, 3, 96, 96), 0.8)
    assert poisson_noise(bright, 1.0, False, rng).std() > 2 * poisson_noise(dark, 1.0, False,
                                                                             rng).std()


def test_jpeg_makes_8x8_blocks_at_low_quality():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    smooth = 0.5 + 0.3 * torch.sin(3 * xx + 2 * yy)  # no edges of its own: blocks show
    x = torch.stack([smooth, 0.8 * smooth, 1 - smooth])[None]
    low, high = jpeg(x, 10), jpeg(x, 95)

    def blockiness(y: torch.Tensor) -> float:  # steps across 8-px block borders vs inside
        d = (y[..., :, 1:] - y[..., :, :-1]).abs().mean(dim=(0, 1, 2))
        return float(d[7::8].mean() / d.mean())

    assert blockiness(low) > 1.2 * blockiness(high)
    assert (high - x).abs().mean() < (low - x).abs().mean()


def test_named_degradations():
    hr = pattern()
    lr = imresize(hr, 0.25, uint8_passes=True)
    assert torch.equal(NAMED["jpeg60"](hr, 4, 0), jpeg(lr, 60))
    noisy = NAMED["noise5"](hr, 4, 0)
    assert 3 < float((noisy - lr).std()) * 255 < 7
    mild, severe = NAMED["realesrgan-mild"], NAMED["realesrgan-severe"]
    err = [float((f(hr, 4, s) - lr).abs().mean()) for f in (mild, severe) for s in range(8)]
    assert np.mean(err[:8]) < np.mean(err[8:])  # severe moves further from the clean LR


def test_the_second_order_chain_draws_every_operation():
    """Across seeds the defaults change detail (blur), add noise and resample: the LR is far
    from the clean bicubic one on average, and no two seeds agree."""
    hr = pattern()
    clean = imresize(hr, 0.25, uint8_passes=True)
    outs = [degrade(hr, 4, s, Degradation()) for s in range(6)]
    assert all(float((o - clean).abs().mean()) > 0.005 for o in outs)
    assert len({o.numpy().tobytes() for o in outs}) == 6


def test_the_plain_path_is_the_bicubic_downscale_with_noise_and_jpeg():
    """plain_prob = 1: the MATLAB bicubic LR, then only the second pass's noise and JPEG; with
    no noise and quality 100 it stays at the clean LR (JPEG's 4:2:0 chroma aside); the chain
    with the same quiet passes does not."""
    hr = pattern()
    clean = imresize(hr, 0.25, uint8_passes=True)
    quiet = Stage(noise_sigma=(0.0, 0.0), gaussian_noise_prob=1.0, jpeg_quality=(100, 100))
    plain = Degradation(second=quiet, plain_prob=1.0)
    assert float((degrade(hr, 4, 0, plain) - clean).abs().mean()) < 1 / 255
    chain = Degradation(first=quiet, second=quiet)
    assert float((degrade(hr, 4, 0, chain) - clean).abs().mean()) > 0.005  # blurred, resized
    photo = [NAMED["realesrgan-photo"](hr, 4, s) for s in range(16)]
    near = [float((o - clean).abs().mean()) < 0.013 for o in photo]
    assert 0 < sum(near) < 16  # both paths are drawn


def test_the_plain_path_applies_noise_and_jpeg_each_with_its_own_probability():
    """Probability 0 skips an operation, 1 applies it: neither gives the clean LR, JPEG alone
    gives exactly the clean LR saved at that quality, noise alone leaves no flat area flat."""
    hr = pattern()
    clean = imresize(hr, 0.25, uint8_passes=True)
    second = Stage(noise_sigma=(5.0, 5.0), gaussian_noise_prob=1.0, jpeg_quality=(60, 60))

    def plain(noise_prob: float, jpeg_prob: float) -> torch.Tensor:
        cfg = Degradation(second=second, plain_prob=1.0, plain_noise_prob=noise_prob,
                          plain_jpeg_prob=jpeg_prob)
        return degrade(hr, 4, 0, cfg)

    assert torch.equal(plain(0, 0), clean)
    assert torch.equal(plain(0, 1), jpeg(clean, 60))
    noisy = plain(1, 0)
    assert 3 / 255 < float((noisy - clean).std()) < 7 / 255
    assert not torch.equal(plain(1, 1), jpeg(clean, 60))


def test_the_photo_mix_keeps_some_inputs_clean():
    """photo-mix trains on clean LR too: about a fifth of its draws are exactly the clean LR."""
    hr = pattern()
    clean = imresize(hr, 0.25, uint8_passes=True)
    same = sum(torch.equal(NAMED["photo-mix"](hr, 4, s), clean) for s in range(60))
    assert 3 <= same <= 24


def test_training_pairs_take_the_degradation_reproducibly(train_folder):
    from fastdiffsr.data.datasets import HRPatches, PatchSpec, list_images, make_lr

    files = list_images(train_folder)
    clean = HRPatches(files, PatchSpec(16, 4, seed=3))
    real = HRPatches(files, PatchSpec(16, 4, seed=3, degradation="realesrgan-severe"))
    (lr_c, hr_c), (lr_r, hr_r) = clean[5], real[5]
    assert torch.equal(hr_c, hr_r) and lr_r.shape == lr_c.shape == (3, 16, 16)
    assert not torch.equal(lr_c, lr_r)
    assert torch.equal(lr_r, real[5][0])  # the same sample, the same draw
    assert torch.equal(lr_r, make_lr(hr_r[None], 4, "realesrgan-severe",
                                     3 * 1_000_003 + 5)[0])


def test_a_training_config_names_a_known_degradation():
    from fastdiffsr.train.trainer import TrainConfig

    assert TrainConfig(degradation="jpeg60").degradation == "jpeg60"
    with pytest.raises(ValueError, match="degradation"):
        TrainConfig(degradation="jpeg")


def test_models_say_which_input_they_were_trained_for():
    from fastdiffsr.zoo import trained_for

    stage = {"iterations": 10, "batch_size": 2}
    assert trained_for({}) == "any (interpolation)"
    assert trained_for({"model": {"scale": 4}, "prior": stage}) == "clean bicubic-downscaled LR"
    real = {"model": {"scale": 4}, "prior": {**stage, "degradation": "realesrgan-mild"},
            "diffusion": {**stage, "degradation": "bicubic"}}
    assert trained_for(real) == "real-world photos (realesrgan-mild)"


@pytest.mark.parametrize("config", ["rdsr/x4-real.toml", "edgesdsr/fast-real.toml"])
def test_the_real_configs_degrade_every_stage_that_trains(config):
    from pathlib import Path

    from fastdiffsr.train.run import load_recipe

    _, _, recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs" / config)
    stages = [v for v in vars(recipe).values() if hasattr(v, "degradation")]
    trained = [s for s in stages if s.iterations > 0]
    assert trained and all(s.degradation == "photo-mix" for s in trained)
