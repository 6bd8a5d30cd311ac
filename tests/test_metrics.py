"""PSNR / SSIM on Y: definitions, and the bicubic numbers of the literature on our files."""

from __future__ import annotations

import math

import pytest
import torch

from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.metrics import psnr_y, rgb_to_y, ssim_y
from fastdiffsr.zoo import load_model


def test_y_channel_range() -> None:
    assert rgb_to_y(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16.0)
    assert rgb_to_y(torch.ones(1, 3, 1, 1)).item() == pytest.approx(235.0)
    gray = torch.full((1, 1, 2, 2), 0.5)
    assert torch.allclose(rgb_to_y(gray), rgb_to_y(gray.expand(-1, 3, -1, -1)))


def test_psnr_of_a_known_error() -> None:
    hr = torch.full((1, 3, 20, 20), 100 / 255)
    sr = hr.clone()
    sr[..., 4:-4, 4:-4] += 10 / 255  # Y moves by 10 * 219/255 inside the crop
    expected = 10 * math.log10(255**2 / (10 * 219 / 255) ** 2)
    assert psnr_y(sr, hr, crop=4).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_identity_and_sensitivity() -> None:
    torch.manual_seed(0)
    hr = torch.rand(1, 3, 48, 48)
    assert ssim_y(hr, hr, 4).item() == pytest.approx(1.0)
    assert ssim_y((hr + 0.1 * torch.randn_like(hr)).clamp(0, 1), hr, 4).item() < 0.95


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9), 0)


@pytest.mark.parametrize(("name", "psnr"), [("Set5", 28.43), ("Set14", 26.09), ("B100", 25.96)])
def test_bicubic_matches_the_literature(bench_root, name: str, psnr: float) -> None:
    result, _ = evaluate_set(load_model("bicubic"), bench_root, name)
    assert abs(result.psnr - psnr) <= 0.02
    if name == "Set5":
        assert abs(result.ssim - 0.811) <= 0.002
