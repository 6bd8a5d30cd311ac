"""MATLAB-compatible bicubic ``imresize`` in torch.

Reproduces ``imresize(img, scale, 'bicubic')`` (Keys cubic, a = -0.5, antialiasing when
downscaling, symmetric borders) as MATLAB computes it: per axis, each output pixel is a weighted
sum of a few input pixels (its ``contributions``: 4 taps upscaling, 4 / scale + 2 downscaling),
applied as a matrix product (BLAS: fast): one dense [out, in] matrix while that is small, else
block by block, each block of outputs multiplying the narrow band of inputs it reads, so memory
stays O(output) for any size (one dense matrix for a 1 x 100000 line x4 would take 160 GB).
Batched, any device, differentiable.
MATLAB resizes rows (height) first at equal scales and, on ``uint8`` images, rounds to 8 bits
after each axis pass: ``uint8_passes=True`` does the same (that is how the benchmarks' official
LR files were made), the default keeps floats throughout.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _symmetric_index(idx: Tensor, n: int) -> Tensor:
    """Map any integer index onto [0, n) by mirror reflection with the edge repeated."""
    period = 2 * n
    # the extension is even about -1/2 (index -1 - i reads i): fold negatives first, so the
    # remainder sees no negative operand (ExecuTorch's int remainder truncates like C's %)
    idx = torch.remainder(torch.where(idx < 0, -1 - idx, idx), period)
    return torch.where(idx < n, idx, period - 1 - idx)


@lru_cache(maxsize=64)
def _contributions_cpu(in_len: int, out_len: int, scale: float, antialias: bool
                       ) -> tuple[Tensor, Tensor]:
    """MATLAB's ``contributions``: input indices [out_len, taps] (0-based, borders mirrored)
    and float64 weights [out_len, taps], each row summing to 1."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None]  # [out, taps], 1-based
    dist = u[:, None] - idx
    w = scale * cubic(dist * scale) if (scale < 1 and antialias) else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    return _symmetric_index(idx.long() - 1, in_len), w


def contributions(
    in_len: int, out_len: int, scale: float, antialias: bool = True, *, device=None, dtype=None
) -> tuple[Tensor, Tensor]:
    """(indices [out_len, taps], weights [out_len, taps]): output pixel i of a resized 1-D
    signal is sum_k weights[i, k] * signal[indices[i, k]], as MATLAB's ``imresize``.

    Cached, except while a graph is traced (``torch.onnx.export``, ``torch.compile``): the
    tracer's fake tensors must not be kept for later real calls."""
    build = _contributions_cpu.__wrapped__ if torch.compiler.is_compiling() else _contributions_cpu
    idx, w = build(in_len, out_len, float(scale), antialias)
    return idx.to(device), w.to(device=device, dtype=dtype or torch.float32)


DENSE_LIMIT = 1 << 22  # entries of a dense resize matrix (16 MB in float32)
BLOCK = 512  # output rows per block beyond it


def _resize_rows(x: Tensor, idx: Tensor, w: Tensor) -> Tensor:
    """Resize ``x`` [..., H, W] along H with contributions ``idx``, ``w`` [out, taps]."""
    out_len, in_len = idx.shape[0], x.shape[-2]
    if out_len * in_len <= DENSE_LIMIT:
        return _dense(idx, w, 0, in_len) @ x
    out = x.new_empty((*x.shape[:-2], out_len, x.shape[-1]))
    for a in range(0, out_len, BLOCK):
        rows = idx[a : a + BLOCK]
        lo, hi = int(rows.min()), int(rows.max()) + 1  # the inputs these outputs read
        out[..., a : a + BLOCK, :] = _dense(rows, w[a : a + BLOCK], lo, hi) @ x[..., lo:hi, :]
    return out


def _dense(idx: Tensor, w: Tensor, lo: int, hi: int) -> Tensor:
    """The [outputs, hi - lo] matrix of contributions that read inputs lo .. hi - 1."""
    mat = torch.zeros(idx.shape[0], hi - lo, dtype=w.dtype, device=w.device)
    return mat.scatter_add_(1, idx - lo, w)


def output_size(in_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """MATLAB's output size for a scale factor: ceil(scale * size)."""
    return tuple(math.ceil(scale * s - 1e-9) for s in in_hw)  # type: ignore[return-value]


def imresize(
    x: Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
    uint8_passes: bool = False,
) -> Tensor:
    """Bicubic resize of ``x`` [..., H, W] by ``scale`` or to ``size`` (exactly one of them).

    With ``scale`` the kernel uses that factor and the output is ceil(scale * H) x ceil(scale * W);
    with ``size`` each axis uses its own factor out/in, as MATLAB does. ``uint8_passes`` takes
    ``x`` in [0, 1] and rounds to 8-bit levels after each pass, as MATLAB does on ``uint8``.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    h, w = x.shape[-2:]
    if size is None:
        oh, ow = output_size((h, w), scale)
        sh = sw = float(scale)
    else:
        oh, ow = size
        sh, sw = oh / h, ow / w
    dtype = x.dtype if x.is_floating_point() else torch.float32
    rows_idx, rows_w = contributions(h, oh, sh, antialias, device=x.device, dtype=dtype)
    cols_idx, cols_w = contributions(w, ow, sw, antialias, device=x.device, dtype=dtype)
    # [..., H, W] -> [..., oh, W] -> [..., oh, ow]
    rows = _resize_rows(x.to(dtype), rows_idx, rows_w)
    if uint8_passes:
        rows = _round8(rows)
    out = _resize_rows(rows.transpose(-1, -2), cols_idx, cols_w).transpose(-1, -2)
    return _round8(out) if uint8_passes else out


def _round8(x: Tensor) -> Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255
