"""Tiled inference with overlap blending for super-resolution models.

A large low-resolution (LR) image is cut into equally sized, overlapping tiles; the model runs
on batches of tiles and the high-resolution (HR) outputs are merged with smooth weight maps::

    out = sum_i(window_i * fn(tile_i)) / sum_i(window_i)

Each window is 1 in the tile interior and falls off with a raised-cosine (``sin^2``) ramp on
every side that borders another tile, so neighbouring tiles cross-fade instead of meeting at
a hard seam.  Sides on the image border are not ramped.

Guard band: the outermost ``guard`` LR pixels of every shared side get a tiny positive weight
(``1e-8``), and the ramp spans the ``overlap - 2 * guard`` pixels in the middle of the
overlap.  Pixels whose receptive field reaches past a tile edge (zero padding inside the
model) are therefore discarded, which makes tiling exact for a local (convolutional) model
with receptive-field radius ``r <= guard``.  ``tiled_apply`` uses ``guard = overlap // 4`` by
default (exact for ``overlap >= 4 * r``, cross-fade over the central half of the overlap);
``guard=0`` ramps over the whole overlap, ``guard = overlap // 2`` is exact for
``overlap >= 2 * r`` but switches between tiles without a cross-fade.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Canvas", "Sink", "auto_tile_size", "blend_window", "tile_starts", "tiled_apply"]

_FLOOR = 1e-8  # weight of guard-band pixels: > 0, so normalisation never divides by zero

Edges = tuple[bool, bool, bool, bool]
TileFn = Callable[..., Tensor]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px that cover ``[0, size)``.

    Consecutive tiles overlap by at least ``overlap`` px (stride ``tile - overlap``); the last
    tile is aligned to the end (start ``size - tile``).  Returns ``[0]`` when ``size <= tile``.
    Example: ``tile_starts(512, 128, 32) == [0, 96, 192, 288, 384]``.
    """
    if size < 1 or tile < 1:
        raise ValueError(f"size and tile must be >= 1, got size={size}, tile={tile}")
    if size <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    starts = list(range(0, size - tile, tile - overlap))
    starts.append(size - tile)
    return starts


def _edge_profile(n: int, guard: int) -> Tensor:
    """Weights of the first ``n - guard`` px from a shared edge, float64 ``[n - guard]``.

    ``guard`` px at ``_FLOOR``, then ``sin^2(pi/2 * (i + 0.5) / m)`` over ``m = n - 2 * guard``
    px (strictly > 0, rising towards 1).
    """
    m = n - 2 * guard
    i = torch.arange(m, dtype=torch.float64)
    ramp = torch.sin(0.5 * math.pi * (i + 0.5) / m).square().clamp_min(_FLOOR)
    return torch.cat([torch.full((guard,), _FLOOR, dtype=torch.float64), ramp])


def _axis_profile(length: int, n: int, guard: int, low: bool, high: bool) -> Tensor:
    """1-D window, float64 ``[length]``: ones, ramped at the low / high end where flagged."""
    weights = torch.ones(length, dtype=torch.float64)
    prof = _edge_profile(n, guard)[:length]
    k = prof.numel()
    if low:
        weights[:k] = torch.minimum(weights[:k], prof)
    if high:
        weights[length - k :] = torch.minimum(weights[length - k :], prof.flip(0))
    return weights


def blend_window(
    tile_h: int,
    tile_w: int,
    overlap: int,
    edges: Edges,
    scale: int,
    *,
    guard: int = 0,
) -> Tensor:
    """Blend weights of one tile at output resolution, float32 ``[tile_h*scale, tile_w*scale]``.

    Args:
        tile_h, tile_w: tile size in LR pixels.
        overlap: overlap between neighbouring tiles in LR pixels; the ramp covers
            ``overlap * scale`` output pixels on each shared side.
        edges: ``(top, bottom, left, right)``; True where another tile borders that side.
            Sides with False (image border) are not ramped.
        scale: upscaling factor.
        guard: LR pixels at each shared side kept at a tiny positive weight before the
            ramp starts (clamped to ``overlap // 2``); 0 ramps over the whole overlap.

    Returns 1 in the interior; every value is strictly positive.
    """
    if min(tile_h, tile_w, scale) < 1 or overlap < 0 or guard < 0:
        raise ValueError(
            f"need tile_h, tile_w, scale >= 1 and overlap, guard >= 0; got tile_h={tile_h}, "
            f"tile_w={tile_w}, scale={scale}, overlap={overlap}, guard={guard}"
        )
    if len(edges) != 4:
        raise ValueError(f"edges must be (top, bottom, left, right), got {edges!r}")
    top, bottom, left, right = (bool(e) for e in edges)
    n = overlap * scale
    g = min(guard * scale, n // 2)
    rows = _axis_profile(tile_h * scale, n, g, top, bottom)
    cols = _axis_profile(tile_w * scale, n, g, left, right)
    return torch.outer(rows, cols).to(torch.float32)


def auto_tile_size(
    h: int,
    w: int,
    bytes_per_lr_pixel: float,
    budget_bytes: int,
    multiple_of: int = 1,
    minimum: int = 32,
) -> int:
    """Largest square tile (LR px) whose activations ``tile**2 * bytes_per_lr_pixel`` fit.

    The result is a multiple of ``multiple_of``, at least ``minimum`` (rounded up to
    ``multiple_of``; this floor wins over the budget) and never larger than ``max(h, w)``
    rounded up to ``multiple_of`` (this cap wins over the floor).
    ``bytes_per_lr_pixel == 0`` means "no limit" and returns the cap.
    """
    if min(h, w, multiple_of, minimum) < 1:
        raise ValueError(
            f"h, w, multiple_of and minimum must be >= 1, got h={h}, w={w}, "
            f"multiple_of={multiple_of}, minimum={minimum}"
        )
    if bytes_per_lr_pixel < 0 or budget_bytes < 0:
        raise ValueError(
            f"bytes_per_lr_pixel and budget_bytes must be >= 0, got "
            f"{bytes_per_lr_pixel} and {budget_bytes}"
        )
    cap = -(-max(h, w) // multiple_of) * multiple_of
    if bytes_per_lr_pixel == 0:
        return cap
    side = math.isqrt(int(budget_bytes / bytes_per_lr_pixel))
    while side > 0 and side * side * bytes_per_lr_pixel > budget_bytes:
        side -= 1  # guard against float rounding in the division above
    side = side // multiple_of * multiple_of
    floor = -(-minimum // multiple_of) * multiple_of
    return min(max(side, floor), cap)


def _grid_ratios(inputs: list[Tensor]) -> list[int]:
    """Each input's grid ratio r to the first (the LR [1, C, H, W]): input i is
    [1, C_i, r H, r W] with r a positive integer; raises ValueError otherwise."""
    x = inputs[0]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must have shape [1, C, H, W], got {list(x.shape)}")
    h, w = x.shape[-2:]
    ratios = []
    for t in inputs:
        r = t.shape[-2] // h if t.ndim == 4 else 0
        if r < 1 or t.shape[0] != 1 or tuple(t.shape[-2:]) != (r * h, r * w):
            raise ValueError(f"every input must be [1, C, rH, rW] with H, W = {h}, {w} and an "
                             f"integer r >= 1, got {list(t.shape)}")
        ratios.append(r)
    return ratios


def _check_args(tile: int, overlap: int, scale: int, batch_size: int) -> None:
    if tile < 1 or overlap < 0 or scale < 1 or batch_size < 1:
        raise ValueError(
            f"need tile >= 1, overlap >= 0, scale >= 1, batch_size >= 1; got tile={tile}, "
            f"overlap={overlap}, scale={scale}, batch_size={batch_size}"
        )


def _check_output(y: Tensor, n: int, out_h: int, out_w: int, channels: int | None) -> None:
    """Raise ValueError unless ``y`` is ``[n, C_out, out_h, out_w]`` (``C_out == channels``)."""
    ok = isinstance(y, Tensor) and y.ndim == 4
    ok = ok and y.shape[0] == n and tuple(y.shape[2:]) == (out_h, out_w)
    ok = ok and (channels is None or y.shape[1] == channels)
    if not ok:
        got = list(y.shape) if isinstance(y, Tensor) else type(y).__name__
        want = [n, "C_out" if channels is None else channels, out_h, out_w]
        raise ValueError(f"fn output has shape {got}, expected {want}")


def _batch_limit(batch_size: int, th: int, tw: int, bpp: float, budget: int) -> int:
    """Tiles per call: ``batch_size``, reduced so ``n * th * tw * bpp`` fits ``budget``."""
    if bpp <= 0:
        return batch_size
    return max(1, min(batch_size, int(budget // (th * tw * bpp))))


def _tile_grid(h: int, w: int, th: int, tw: int, overlap: int) -> list[tuple[int, int, Edges]]:
    """Row-major list of ``(y, x, (top, bottom, left, right))`` for every tile."""
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    return [
        (y, x, (i > 0, i < len(ys) - 1, j > 0, j < len(xs) - 1))
        for i, y in enumerate(ys)
        for j, x in enumerate(xs)
    ]


# sink(first_row, rows [1, C_out, n, W*s]): finished output rows, top to bottom, each row once;
# ``rows`` is valid during the call only (the tiler reuses its memory): copy what is kept
Sink = Callable[[int, Tensor], None]


class Canvas:
    """The sink that assembles the rows into one ``out`` [1, C_out, height, W*s] (channels-last
    memory: it converts to an H x W x C picture without a copy), allocated on the first rows."""

    def __init__(self, height: int):
        self.height = height
        self.out: Tensor | None = None

    def __call__(self, top: int, rows: Tensor) -> None:
        if self.out is None:
            shape = (1, self.height, rows.shape[3], rows.shape[1])
            self.out = rows.new_empty(shape).permute(0, 3, 1, 2)
        self.out[:, :, top : top + rows.shape[2]] = rows


@dataclass
class _Blender:
    """Accumulates windowed tile outputs in ``band`` [1, C_out, th*s, W*s], the output rows
    ``[top, top + th*s)`` (float32 or wider, channels-last memory); rows above a new tile row
    are final and go to ``sink``, so no full-size accumulator exists. Windows are cached per
    edge pattern. Every window is an outer product of a row and a column profile and the tiles
    form a full grid, so the summed weights are the outer product of two 1-D sums, ``rows``
    [H*s] and ``cols`` [W*s]: no full-size weight map is kept either."""

    th: int
    tw: int
    overlap: int
    guard: int
    scale: int
    band: Tensor
    rows: Tensor
    cols: Tensor
    out_dtype: torch.dtype
    sink: Sink
    top: int = 0
    cache: dict[Edges, Tensor] = field(default_factory=dict)

    @classmethod
    def like(
        cls, y: Tensor, h: int, w: int, th: int, tw: int, overlap: int, guard: int, scale: int,
        sink: Sink,
    ) -> _Blender:
        """Zeroed band for an ``[1, C_out, h*scale, w*scale]`` result like ``y``, and the
        weight sums of the tile grid."""
        dtype = torch.promote_types(y.dtype, torch.float32)
        shape = (1, th * scale, w * scale, y.shape[1])
        band = y.new_zeros(shape, dtype=dtype).permute(0, 3, 1, 2)
        g = min(guard * scale, overlap * scale // 2)
        rows = _profile_sum(h, th, overlap, scale, g).to(band)
        cols = _profile_sum(w, tw, overlap, scale, g).to(band)
        return cls(th, tw, overlap, guard, scale, band, rows, cols, y.dtype, sink)

    def window(self, edges: Edges) -> Tensor:
        """Blend window ``[th*s, tw*s]`` on the band's device and dtype."""
        if edges not in self.cache:
            win = blend_window(self.th, self.tw, self.overlap, edges, self.scale, guard=self.guard)
            self.cache[edges] = win.to(self.band)
        return self.cache[edges]

    def add(self, y: Tensor, chunk: list[tuple[int, int, Edges]]) -> None:
        """Add tile outputs ``y`` ``[n, C_out, th*s, tw*s]`` at the positions in ``chunk``
        (row-major, as ``_tile_grid``)."""
        s, ws = self.scale, self.tw * self.scale
        for k, (y0, x0, edges) in enumerate(chunk):
            self.flush(y0 * s)  # the band now starts at the tile's first row
            cols = slice(x0 * s, x0 * s + ws)
            self.band[:, :, :, cols] += y[k : k + 1].to(self.band.dtype) * self.window(edges)

    def flush(self, until: int) -> None:
        """Normalise rows ``[top, until)`` (no tile adds to them any more), give them to the
        sink, and move the band down to start at ``until``."""
        n = until - self.top
        if n <= 0:
            return
        done = self.band[:, :, :n]
        done.div_(self.rows[self.top : until, None]).div_(self.cols[None, :])
        self.sink(self.top, done.to(self.out_dtype))
        keep = self.band.shape[2] - n
        if keep > 0:
            rest = self.band[:, :, n:]
            self.band[:, :, :keep] = rest.clone() if n < keep else rest  # overlapping if n < keep
        self.band[:, :, max(keep, 0) :].zero_()
        self.top = until


def _profile_sum(size: int, tile: int, overlap: int, scale: int, guard: int) -> Tensor:
    """Sum over the tiles along one axis of their 1-D window profiles, float64 [size*scale]."""
    starts = tile_starts(size, tile, overlap)
    total = torch.zeros(size * scale, dtype=torch.float64)
    for i, start in enumerate(starts):
        prof = _axis_profile(tile * scale, overlap * scale, guard, i > 0, i < len(starts) - 1)
        total[start * scale : (start + tile) * scale] += prof
    return total


def _run_tiles(
    fn: TileFn,
    inputs: list[Tensor],
    ratios: list[int],
    th: int,
    tw: int,
    overlap: int,
    guard: int,
    scale: int,
    per_call: int,
    progress: Callable[[int, int], None] | None,
    sink: Sink,
) -> None:
    """Cut every input into the same ``th x tw`` LR tiles (input i at its grid ratio
    ``ratios[i]``), run ``fn`` on batches of them, blend the outputs and give the finished rows
    to ``sink``."""
    h, w = inputs[0].shape[-2:]
    grid = _tile_grid(h, w, th, tw, overlap)
    blender: _Blender | None = None
    for i in range(0, len(grid), per_call):
        chunk = grid[i : i + per_call]
        crops = [torch.cat([t[:, :, r * y0 : r * (y0 + th), r * x0 : r * (x0 + tw)]
                            for y0, x0, _ in chunk])
                 for t, r in zip(inputs, ratios, strict=True)]
        y = fn(*crops)
        channels = None if blender is None else blender.band.shape[1]
        _check_output(y, len(chunk), th * scale, tw * scale, channels)
        if blender is None:
            blender = _Blender.like(y, h, w, th, tw, overlap, guard, scale, sink)
        blender.add(y, chunk)
        if progress is not None:
            progress(i + len(chunk), len(grid))
    blender.flush(h * scale)


def tiled_apply(
    fn: TileFn,
    inputs: Tensor | Sequence[Tensor],
    tile: int,
    overlap: int,
    scale: int,
    *,
    batch_size: int = 4,
    bytes_per_lr_pixel: float = 0.0,
    memory_budget: int = 2 * 1024**3,
    progress: Callable[[int, int], None] | None = None,
    guard: int | None = None,
    sink: Sink | None = None,
) -> Tensor | None:
    """Apply an SR model ``fn`` to an image tile by tile and blend the tiles seamlessly.

    Args:
        fn: maps tiles of every input, ``fn(lr [B, C, th, tw], *others)``, to
            ``[B, C_out, th*scale, tw*scale]``.
        inputs: one LR image ``x`` ``[1, C, H, W]``, or a sequence of it and tensors on finer
            grids ``[1, C_i, r H, r W]`` (integer r, e.g. a diffusion model's noise): every
            tensor is cropped at the same place, scaled by its r.
        tile: tile side in LR px; tiles are ``min(tile, H) x min(tile, W)``, so all have the
            same shape (``upscaler.tile_size`` chooses it for a model).
        overlap: LR px shared by neighbouring tiles, clamped to ``tile - 1``.
        scale: upscaling factor of ``fn``.
        batch_size: maximum tiles per ``fn`` call; when ``bytes_per_lr_pixel > 0`` it is
            further limited so ``n * th * tw * bytes_per_lr_pixel <= memory_budget`` (>= 1).
        progress: called as ``progress(done_tiles, total_tiles)`` after each call.
        guard: LR px at each shared tile side given negligible weight (default
            ``overlap // 4``); tiling is exact for local models with receptive radius <= guard.
        sink: called ``sink(first_row, rows)`` with the output's rows ``[1, C_out, n,
            W*scale]`` top to bottom as soon as no later tile adds to them; then the full
            output is never held (a band of one tile row is). None: they are assembled.

    Returns ``[1, C_out, H*scale, W*scale]`` with the dtype and device of ``fn``'s output
    (if the image fits in one tile, ``fn(*inputs)``), or None when the rows went to ``sink``.
    Runs under the caller's grad mode; exceptions from ``fn`` propagate unchanged.
    """
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    ratios = _grid_ratios(inputs)
    _check_args(tile, overlap, scale, batch_size)
    h, w = inputs[0].shape[-2:]
    if h <= tile and w <= tile:
        y = fn(*inputs)
        _check_output(y, 1, h * scale, w * scale, None)
        if progress is not None:
            progress(1, 1)
        if sink is None:
            return y
        sink(0, y)
        return None
    th, tw = min(tile, h), min(tile, w)
    overlap = min(overlap, tile - 1)
    guard = overlap // 4 if guard is None else guard
    if guard < 0:
        raise ValueError(f"guard must be >= 0, got {guard}")
    per_call = _batch_limit(batch_size, th, tw, bytes_per_lr_pixel, memory_budget)
    canvas = Canvas(h * scale) if sink is None else None
    _run_tiles(fn, inputs, ratios, th, tw, overlap, guard, scale, per_call, progress,
               sink or canvas)
    return None if canvas is None else canvas.out


def pad_to_requirements(x: Tensor, multiple_of: int, minimum: int) -> Tensor:
    """Reflect-pad the bottom/right so each side is >= minimum and a multiple of multiple_of."""
    h, w = x.shape[-2:]
    th = max(minimum, -(-h // multiple_of) * multiple_of)
    tw = max(minimum, -(-w // multiple_of) * multiple_of)
    if (th, tw) == (h, w):
        return x
    mode = "reflect" if th - h < h and tw - w < w else "replicate"
    return F.pad(x, (0, tw - w, 0, th - h), mode=mode)
