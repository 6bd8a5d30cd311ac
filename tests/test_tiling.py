"""Tests for fastdiffsr.tiling: tile layout, blend windows, exactness, seams, errors, batching."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastdiffsr.tiling import auto_tile_size, blend_window, tile_starts, tiled_apply

# ----------------------------------------------------------------------------- helpers


def conv_sr(scale: int, channels: int = 3, width: int = 16) -> nn.Module:
    """Random local SR model: 3 stacked 3x3 convs + PixelShuffle (receptive radius 3 LR px)."""
    torch.manual_seed(1234)
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, channels * scale * scale, 3, padding=1),
        nn.PixelShuffle(scale),
    ).eval()


def nearest(scale: int):
    """Pointwise SR 'model' (receptive radius 0): exact under any tiling."""
    return lambda t: F.interpolate(t, scale_factor=scale, mode="nearest")


def global_op(t: Tensor) -> Tensor:
    """Model with a global operation: bilinear x2 upsample scaled by the tile mean."""
    up = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
    return up * (0.5 + t.mean(dim=(1, 2, 3), keepdim=True))


def smooth_image(size: int = 96) -> Tensor:
    """Natural-ish smooth image [1, 3, size, size]: gradient + low-frequency sinusoids."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = 0.3 + 0.4 * xx + 0.2 * yy + 0.1 * torch.sin(2 * math.pi * (1.3 * xx + 0.7 * yy))
    img = img + 0.05 * torch.cos(2 * math.pi * (0.6 * xx - 1.1 * yy))
    return torch.stack([img, 0.9 * img, 1.1 * img])[None]


class CallCounter:
    """Wraps fn and records the batch size of every call."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.batches: list[int] = []

    def __call__(self, t: Tensor) -> Tensor:
        self.batches.append(t.shape[0])
        return self.fn(t)


# ----------------------------------------------------------------------------- tile_starts


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (512, 128, 32, [0, 96, 192, 288, 384]),
        (100, 32, 8, [0, 24, 48, 68]),
        (96, 32, 0, [0, 32, 64]),
        (97, 32, 0, [0, 32, 64, 65]),
        (70, 24, 12, [0, 12, 24, 36, 46]),
        (53, 24, 6, [0, 18, 29]),
        (33, 32, 31, [0, 1]),
        (32, 32, 8, [0]),
        (10, 32, 8, [0]),
    ],
)
def test_tile_starts_examples(size: int, tile: int, overlap: int, expected: list[int]) -> None:
    assert tile_starts(size, tile, overlap) == expected


def test_tile_starts_properties() -> None:
    for size in range(1, 130, 7):
        for tile in (1, 5, 16, 24, 33):
            for overlap in sorted({0, 1, tile // 4, tile // 2, tile - 1} - {tile}):
                starts = tile_starts(size, tile, overlap)
                if size <= tile:
                    assert starts == [0]
                    continue
                assert starts[0] == 0 and starts[-1] == size - tile
                gaps = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
                assert all(0 < g <= tile - overlap for g in gaps)  # overlap >= `overlap`


def test_tile_starts_invalid() -> None:
    for args in [(0, 8, 0), (10, 0, 0), (100, 32, 32), (100, 32, -1)]:
        with pytest.raises(ValueError):
            tile_starts(*args)


# ----------------------------------------------------------------------------- blend_window


def test_blend_window_shape_interior_and_border_sides() -> None:
    win = blend_window(24, 16, 4, (True, False, False, True), 2)
    assert win.shape == (48, 32) and win.dtype == torch.float32
    assert (win > 0).all() and (win <= 1).all()
    assert (win[8:, :24] == 1).all()  # interior and the unramped bottom / left sides
    assert (win[0, :24] < 0.01).all() and (win[8:, -1] < 0.01).all()
    assert (blend_window(5, 7, 3, (False,) * 4, 4) == 1).all()


def test_blend_window_raised_cosine_profile_and_symmetry() -> None:
    n = 4 * 3  # overlap * scale
    win = blend_window(20, 20, 4, (True, True, True, True), 3)
    expected = torch.sin(0.5 * math.pi * (torch.arange(n) + 0.5) / n) ** 2
    torch.testing.assert_close(win[:n, 30], expected.float())
    torch.testing.assert_close(win, win.flip(0))
    torch.testing.assert_close(win, win.T)


@pytest.mark.parametrize("guard", [0, 1, 2])
def test_blend_windows_of_neighbours_sum_to_one(guard: int) -> None:
    tile, overlap, scale = 16, 6, 2
    left = blend_window(1, tile, overlap, (False, False, False, True), scale, guard=guard)[0]
    right = blend_window(1, tile, overlap, (False, False, True, False), scale, guard=guard)[0]
    stride = (tile - overlap) * scale
    total = torch.zeros(stride + tile * scale)
    total[: tile * scale] += left
    total[stride:] += right
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_blend_window_guard_band_is_tiny_but_positive() -> None:
    win = blend_window(1, 16, 8, (False, False, True, False), 2, guard=2)[0]
    assert (win[:4] > 0).all() and (win[:4] < 1e-6).all()
    assert win[4] > 1e-3 and (win[12:] == 1).all()


def test_blend_window_invalid() -> None:
    with pytest.raises(ValueError):
        blend_window(0, 8, 2, (True,) * 4, 2)
    with pytest.raises(ValueError):
        blend_window(8, 8, -1, (True,) * 4, 2)


# ----------------------------------------------------------------------------- auto_tile_size


@pytest.mark.parametrize("multiple_of", [1, 8, 64])
@pytest.mark.parametrize("bpp", [1.0, 37.5, 4096.0])
def test_auto_tile_size_respects_budget_and_multiple(multiple_of: int, bpp: float) -> None:
    budget = 64 * 1024**2
    t = auto_tile_size(10_000, 10_000, bpp, budget, multiple_of=multiple_of)
    assert t % multiple_of == 0 and t >= 32
    assert t * t * bpp <= budget
    assert (t + multiple_of) ** 2 * bpp > budget  # largest such tile


def test_auto_tile_size_cap_and_minimum() -> None:
    assert auto_tile_size(50, 70, 1.0, 10**9) == 70
    assert auto_tile_size(50, 70, 1.0, 10**9, multiple_of=16) == 80
    assert auto_tile_size(50, 70, 0.0, 1) == 70
    assert auto_tile_size(500, 700, 1000.0, 10, multiple_of=8, minimum=20) == 24
    assert auto_tile_size(10, 12, 1000.0, 10, minimum=32) == 12
    with pytest.raises(ValueError):
        auto_tile_size(10, 10, -1.0, 10)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize(("overlap", "guard"), [(12, None), (6, 3)])
def test_tiled_equals_untiled_for_local_model(scale: int, overlap: int, guard: int | None) -> None:
    """Receptive radius r = 3: exact with overlap >= 4r (default guard overlap // 4 = r)
    and with overlap = 2r when guard = r."""
    model = conv_sr(scale)
    x = torch.rand(1, 3, 70, 53, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        outs = [
            tiled_apply(model, x, 24, overlap, scale, batch_size=bs, guard=guard) for bs in (1, 3)
        ]
    for out in outs:
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= 1e-5
    assert (outs[0] - outs[1]).abs().max().item() <= 1e-6


def test_guard_band_is_what_makes_local_model_exact() -> None:
    """Ramping over the whole overlap (guard 0) keeps the zero-padding artefacts of tile edges."""
    model = conv_sr(2)
    x = torch.rand(1, 3, 70, 53, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (tiled_apply(model, x, 24, 12, 2, guard=0) - model(x)).abs().max().item()
    assert err > 1e-4


def test_overlap_is_clamped_and_pointwise_model_is_exact() -> None:
    x = torch.rand(1, 2, 30, 21)
    fn = nearest(3)
    for overlap in (0, 5, 9, 100):
        torch.testing.assert_close(tiled_apply(fn, x, 10, overlap, 3), fn(x))


def test_deterministic() -> None:
    model = conv_sr(2)
    x = torch.rand(1, 3, 40, 37)
    with torch.no_grad():
        a = tiled_apply(model, x, 16, 8, 2, batch_size=3)
        b = tiled_apply(model, x, 16, 8, 2, batch_size=3)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- seams


def seam_and_interior(out: Tensor, borders: list[int], margin: int = 2) -> tuple[float, float]:
    """Max |adjacent difference| across tile-border locations vs. away (>= margin px) from them.

    ``borders`` are output columns/rows c where a tile starts or ends (pair c-1, c straddles it).
    """
    dx = (out[..., :, 1:] - out[..., :, :-1]).abs()  # index c-1 holds the pair (c-1, c)
    dy = (out[..., 1:, :] - out[..., :-1, :]).abs()
    seam = max(max(dx[..., c - 1].max().item(), dy[..., c - 1, :].max().item()) for c in borders)
    away = torch.ones(dx.shape[-1], dtype=torch.bool)
    for c in borders:
        away[max(0, c - 1 - margin) : c + margin] = False
    interior = max(dx[..., away].max().item(), dy[..., away, :].max().item())
    return seam, interior


def border_locations(size: int, tile: int, overlap: int, scale: int) -> list[int]:
    starts = tile_starts(size, tile, overlap)
    edges = {e * scale for s in starts for e in (s, s + tile)}
    return sorted(edges - {0, size * scale})


@pytest.mark.parametrize("guard", [None, 0])
def test_blending_hides_seams_of_global_model(guard: int | None) -> None:
    x = smooth_image(96)
    blended = tiled_apply(global_op, x, 32, 8, 2, guard=guard)
    seam, interior = seam_and_interior(blended, border_locations(96, 32, 8, 2))
    assert seam <= interior

    # Naive hard stitching (no overlap, tiles pasted) shows the seams the blend removes.
    pasted = tiled_apply(global_op, x, 32, 0, 2)
    naive_seam, naive_interior = seam_and_interior(pasted, border_locations(96, 32, 0, 2))
    assert naive_seam > 5 * naive_interior
    # Even inside the cross-fade, no step comes close to the pasted seam.
    steepest = max(
        (blended[..., 1:] - blended[..., :-1]).abs().max().item(),
        (blended[..., 1:, :] - blended[..., :-1, :]).abs().max().item(),
    )
    assert steepest < naive_seam / 3


# ----------------------------------------------------------------------------- errors


def test_fn_errors_propagate_unchanged() -> None:
    err = RuntimeError("boom")

    def broken(t: Tensor) -> Tensor:
        raise err

    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(RuntimeError, match="boom") as info:
        tiled_apply(broken, x, 16, 4, 2)
    assert info.value is err
    with pytest.raises(RuntimeError, match="boom"):
        tiled_apply(broken, x, 64, 4, 2)  # single-tile path


@pytest.mark.parametrize(
    "fn",
    [
        nearest(3),  # wrong scale
        lambda t: nearest(2)(t)[:1],  # wrong number of tiles
        lambda t: nearest(2)(t)[0],  # not 4-D
        lambda t: torch.cat([nearest(2)(t)] * t.shape[0], dim=1),  # C_out varies per call
    ],
)
def test_wrong_output_shape_raises(fn) -> None:
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="shape"):
        tiled_apply(fn, x, 16, 4, 2, batch_size=4)  # 9 tiles: calls of 4, 4, 1


def test_single_tile_wrong_shape_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        tiled_apply(nearest(3), torch.rand(1, 3, 20, 20), 32, 4, 2)


def test_invalid_input_raises() -> None:
    fn = nearest(2)
    with pytest.raises(ValueError, match="shape"):
        tiled_apply(fn, torch.rand(2, 3, 40, 40), 16, 4, 2)
    with pytest.raises(ValueError, match="shape"):
        tiled_apply(fn, torch.rand(3, 40, 40), 16, 4, 2)
    for kwargs in [{"overlap": -1}, {"scale": 0}, {"tile": 0}]:
        args = {"tile": 16, "overlap": 4, "scale": 2} | kwargs
        with pytest.raises(ValueError):
            tiled_apply(fn, torch.rand(1, 3, 40, 40), **args)
    with pytest.raises(ValueError):
        tiled_apply(fn, torch.rand(1, 3, 40, 40), 16, 4, 2, batch_size=0)


# ----------------------------------------------------------------------------- auto tile


def test_memory_budget_limits_tiles_per_call_not_the_result() -> None:
    model = conv_sr(2)
    x = torch.rand(1, 3, 70, 53)
    bpp, budget = 100.0, 41 * 41 * 100
    tile = auto_tile_size(70, 53, bpp, budget, multiple_of=8)
    assert tile == 40
    with torch.no_grad():
        limited = tiled_apply(model, x, tile, 12, 2, bytes_per_lr_pixel=bpp, memory_budget=budget)
        unlimited = tiled_apply(model, x, tile, 12, 2)  # same tiles, 4 per call
    assert (limited - unlimited).abs().max().item() <= 1e-6


def test_every_input_is_cropped_alike_at_its_grid_ratio() -> None:
    """A second input on a grid 2x the LR's (e.g. a model's noise) reaches ``fn`` as the crop
    of the same place; a non-integer ratio is an error."""
    x, extra = torch.rand(1, 3, 24, 40), torch.rand(1, 2, 48, 80)
    pairs: list[tuple[Tensor, Tensor]] = []

    def fn(t: Tensor, e: Tensor) -> Tensor:
        pairs.extend(zip(t.unbind(0), e.unbind(0), strict=True))
        return nearest(2)(t)

    tiled_apply(fn, [x, extra], 16, 4, 2, batch_size=4)
    starts = [(y, x0) for y in (0, 8) for x0 in (0, 12, 24)]
    assert len(pairs) == len(starts)
    for (tile, e), (y, x0) in zip(pairs, starts, strict=True):
        assert torch.equal(tile, x[0, :, y : y + 16, x0 : x0 + 16])
        assert torch.equal(e, extra[0, :, 2 * y : 2 * y + 32, 2 * x0 : 2 * x0 + 32])
    with pytest.raises(ValueError, match="integer r"):
        tiled_apply(fn, [x, torch.rand(1, 2, 36, 60)], 16, 4, 2)


def test_a_tile_as_large_as_the_image_runs_it_once() -> None:
    x = torch.rand(1, 3, 70, 53)
    seen: list[Tensor] = []

    def fn(t: Tensor) -> Tensor:
        seen.append(t)
        return nearest(2)(t)

    progress: list[tuple[int, int]] = []
    tiled_apply(fn, x, 70, 8, 2, progress=lambda d, n: progress.append((d, n)))
    assert len(seen) == 1 and seen[0] is x and progress == [(1, 1)]


def test_memory_budget_limits_tiles_per_call() -> None:
    counter = CallCounter(nearest(2))
    x = torch.rand(1, 3, 70, 53)
    # 24x24 tiles at 10 B/px = 5760 B each; a 12000 B budget fits 2 per call.
    tiled_apply(counter, x, 24, 12, 2, batch_size=4, bytes_per_lr_pixel=10.0, memory_budget=12000)
    assert max(counter.batches) == 2 and sum(counter.batches) == 5 * 4


# ----------------------------------------------------------------------------- batching


def test_batching_call_count_and_progress() -> None:
    counter = CallCounter(nearest(1))
    x = torch.rand(1, 1, 512, 512)
    progress: list[tuple[int, int]] = []
    out = tiled_apply(
        counter, x, 128, 32, 1, batch_size=4, progress=lambda d, n: progress.append((d, n))
    )
    assert counter.batches == [4, 4, 4, 4, 4, 4, 1]  # 25 tiles, 7 calls
    assert progress == [(4, 25), (8, 25), (12, 25), (16, 25), (20, 25), (24, 25), (25, 25)]
    torch.testing.assert_close(out, x)

    one_by_one = CallCounter(nearest(1))
    tiled_apply(one_by_one, x, 128, 32, 1, batch_size=1)
    assert one_by_one.batches == [1] * 25


# ----------------------------------------------------------------------------- grad / dtype


def test_runs_under_caller_grad_mode() -> None:
    model = conv_sr(2)
    x = torch.rand(1, 3, 40, 37, requires_grad=True)
    tiled_apply(model, x, 16, 12, 2).square().sum().backward()
    tiled_grad = x.grad.clone()
    x.grad = None
    model(x).square().sum().backward()
    torch.testing.assert_close(tiled_grad, x.grad, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        assert not tiled_apply(model, x, 16, 12, 2).requires_grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_output_dtype_follows_fn(dtype: torch.dtype) -> None:
    x = torch.rand(1, 3, 40, 37)
    out = tiled_apply(lambda t: nearest(2)(t).to(dtype), x, 16, 4, 2)
    assert out.dtype == dtype and out.shape == (1, 3, 80, 74)
    torch.testing.assert_close(out, nearest(2)(x).to(dtype))


@pytest.mark.parametrize(("size", "tile", "overlap"), [(96, 32, 8), (90, 40, 12), (70, 33, 16)])
def test_sink_gets_each_row_once_top_to_bottom_and_the_same_values(size: int, tile: int,
                                                                  overlap: int) -> None:
    """Rows stream out as tile rows finish (the last stride may be short: 70 = 33 + 33 + 4),
    none is held longer than a tile row, and together they equal the assembled output."""
    x, fn = smooth_image(size), conv_sr(2)
    calls: list[tuple[int, Tensor]] = []

    def keep(top: int, rows: Tensor) -> None:
        calls.append((top, rows.clone()))

    with torch.no_grad():
        full = tiled_apply(fn, x, tile, overlap, 2)
        none = tiled_apply(fn, x, tile, overlap, 2, sink=keep)
    assert none is None
    tops = [top for top, _ in calls]
    assert tops[0] == 0 and tops == sorted(tops) and len(tops) == len(tile_starts(size, tile,
                                                                                 overlap))
    assert all(r.shape[2] <= 2 * tile for _, r in calls)
    assert [top + r.shape[2] for top, r in calls] == [*tops[1:], 2 * size]
    assert torch.equal(torch.cat([r for _, r in calls], dim=2), full)


def test_sink_gets_a_single_tile_whole() -> None:
    calls: list[tuple[int, Tensor]] = []
    with torch.no_grad():
        tiled_apply(nearest(2), smooth_image(24), 32, 8, 2,
                    sink=lambda top, r: calls.append((top, r.clone())))
    assert len(calls) == 1 and calls[0][0] == 0 and calls[0][1].shape == (1, 3, 48, 48)
