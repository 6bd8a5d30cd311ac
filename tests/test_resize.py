"""MATLAB-compatible bicubic: kernel, sizes, invariants, and the official LR files."""

from __future__ import annotations

import pytest
import torch

from fastdiffsr.data.datasets import benchmark_pairs, load_pair
from fastdiffsr.resize import contributions, cubic, imresize, output_size


def test_cubic_kernel_values() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    # Keys (a = -0.5): 1, 0.5625, 0, -0.0625, 0, 0
    assert torch.allclose(cubic(x), torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0]))


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 0.7, 1.5, 2, 3, 4])
def test_rows_sum_to_one_and_constants_are_kept(scale: float) -> None:
    idx, w = contributions(37, output_size((37, 37), scale)[0], scale)
    assert torch.allclose(w.sum(1), torch.ones(w.shape[0]), atol=1e-6)
    assert idx.min() >= 0 and idx.max() < 37
    x = torch.full((2, 3, 17, 23), 0.3)
    assert torch.allclose(imresize(x, scale), torch.full_like(imresize(x, scale), 0.3), atol=1e-6)


def test_output_sizes_follow_matlab() -> None:
    assert imresize(torch.rand(1, 3, 10, 7), 4).shape[-2:] == (40, 28)
    assert imresize(torch.rand(1, 3, 10, 7), 0.25).shape[-2:] == (3, 2)  # ceil
    assert imresize(torch.rand(1, 3, 10, 7), 1.5).shape[-2:] == (15, 11)
    assert imresize(torch.rand(1, 3, 10, 7), size=(13, 9)).shape[-2:] == (13, 9)


def test_integer_upscale_keeps_linear_ramps_inside() -> None:
    # cubic interpolation reproduces linear functions exactly away from the borders
    ramp = torch.arange(20, dtype=torch.float64).view(1, 1, 1, 20).expand(1, 1, 4, 20)
    up = imresize(ramp, 2)[0, 0, 0]
    centres = (torch.arange(40, dtype=torch.float64) + 1) / 2 + 0.25 - 1  # MATLAB mapping
    assert torch.allclose(up[4:-4], centres[4:-4], atol=1e-9)


def test_batched_differentiable_and_dtype() -> None:
    x = torch.rand(3, 2, 12, 12, dtype=torch.float64, requires_grad=True)
    y = imresize(x, 0.5)
    assert torch.allclose(y[1], imresize(x[1:2], 0.5)[0])
    y.sum().backward()
    assert x.grad is not None and y.dtype == torch.float64


def test_uint8_passes_give_8bit_levels() -> None:
    y = imresize(torch.rand(1, 3, 16, 16), 0.25, uint8_passes=True)
    assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-4)


def test_reproduces_official_lrx4(bench_root) -> None:
    within, total, abs_sum = 0, 0, 0.0
    for name in ("Set5", "Set14", "B100"):
        for hr_path, lr_path in benchmark_pairs(bench_root, name, 4):
            lr, hr = load_pair(hr_path, lr_path, 4)
            ours = torch.round(imresize(hr.double(), 0.25, uint8_passes=True) * 255)
            diff = (ours - torch.round(lr.double() * 255)).abs()
            within += int((diff <= 1).sum())
            total += diff.numel()
            abs_sum += float(diff.sum())
    assert within / total >= 0.995
    assert abs_sum / total < 0.15


def test_memory_is_output_times_taps_not_output_times_input() -> None:
    """A 1 x 100000 line x4 (a dense matrix: 400000 x 100000 floats, 160 GB) in a few MB."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    y = imresize(torch.rand(1, 3, 1, 100_000), 4)
    assert y.shape[-2:] == (4, 400_000)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 * 1024  # KiB
