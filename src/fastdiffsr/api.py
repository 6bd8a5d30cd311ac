"""The Python API: ``upscale(image, model=...)`` on pictures, arrays, PIL images or paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .imageio import LEVELS, Picture, output_meta, picture_to_tensor, quantize, read_image
from .resize import imresize
from .tiling import Sink
from .upscaler import (
    DEFAULTS,
    Progress,
    UpscaleOptions,
    Upscaler,
    model_device,
    upscale_rows,
    upscale_tensor,
)
from .zoo import DEFAULT_MODEL, load_model

ImageLike = Picture | np.ndarray | Image.Image | str | os.PathLike


def upscale_picture(
    model: Upscaler, pic: Picture, opts: UpscaleOptions = DEFAULTS,
    progress: Progress | None = None, levels: bool = False,
) -> Picture:
    """Upscale colour with the model and alpha with bicubic; gray stays gray, depth and the
    metadata are kept (``imageio.output_meta``: new pixel size, DPI scaled).

    ``levels``: the pixels come back as the integer levels of the picture's bit depth, written
    band by band as the tiles finish, so no full-size float copy of the output exists (the
    CLI's way to a file: 425 MB instead of 1.7 GB for a 16384 x 8640 RGB output). An outscale
    other than the model's resizes the whole float output first."""
    device = model_device(model)
    x = picture_to_tensor(pic.pixels).to(device)
    if pic.is_gray:
        x = x.expand(-1, 3, -1, -1)
    resized = opts.outscale is not None and opts.outscale != model.scale
    if levels and not resized:
        shape = (pic.height * model.scale, pic.width * model.scale, pic.pixels.shape[2])
        pixels = np.empty(shape, LEVELS[pic.bit_depth])
        upscale_rows(model, x, _level_writer(pixels, pic.bit_depth), opts, progress)
    else:
        y = upscale_tensor(model, x, opts, progress)
        if resized:
            y = imresize(y, size=_size(pic, opts.outscale)).clamp(0, 1)
        pixels = _pixels(y.mean(dim=1, keepdim=True) if pic.is_gray else y)
        pixels = quantize(pixels, pic.bit_depth) if levels else pixels
    alpha = None
    if pic.alpha is not None:
        a = torch.from_numpy(pic.alpha)[None, None].to(device)
        alpha = imresize(a, model.scale).clamp(0, 1)
        if resized:
            alpha = imresize(alpha, size=_size(pic, opts.outscale)).clamp(0, 1)
        alpha = alpha[0, 0].cpu().numpy()
    meta = pic.meta and output_meta(pic.meta, pixels.shape[1], pixels.shape[0],
                                    pixels.shape[0] / pic.height)
    return Picture(pixels, alpha, pic.bit_depth, meta)


def _size(pic: Picture, outscale: float) -> tuple[int, int]:
    return round(pic.height * outscale), round(pic.width * outscale)


def _level_writer(pixels: np.ndarray, depth: int) -> Sink:
    """The sink that quantizes output rows [1, 3, n, W] into ``pixels`` (H x W x C levels;
    C = 1: the mean of the three channels, as the float path makes gray)."""

    def write(top: int, rows: Tensor) -> None:
        if pixels.shape[2] == 1:
            rows = rows.mean(dim=1, keepdim=True)
        hwc = rows[0].permute(1, 2, 0).cpu().numpy()
        quantize(hwc, depth, out=pixels[top : top + hwc.shape[0]])

    return write


def _pixels(y: Tensor) -> np.ndarray:
    """Our own output [1, C, H, W] -> H x W x C float32 in [0, 1], NaN -> 0, in place: the
    tiler's channels-last result needs no copy (a 16384 x 8640 RGB output is 1.7 GB)."""
    y = y.cpu()
    with torch.inference_mode():  # y is an inference tensor: updated in place under the mode
        hwc = y[0].permute(1, 2, 0).contiguous()
        return torch.nan_to_num_(hwc, nan=0.0).clamp_(0.0, 1.0).numpy()


def upscale(
    image: ImageLike, model: str | Upscaler = DEFAULT_MODEL, *, device: str = "cpu",
    progress: Progress | None = None, **options,
) -> Picture | np.ndarray | Image.Image:
    """Upscale one image; returns the same kind it was given (a path gives a ``Picture``).

    ``options`` are the fields of ``UpscaleOptions`` (outscale, tile, tile_overlap, batch_tiles,
    sampling_steps, seed, memory_budget, dtype, self_ensemble); an unknown or out-of-range one
    raises ``OptionError`` naming the valid ones. ``progress(done_tiles, total_tiles)`` is called
    after each batch of tiles; returning False stops the upscale with ``Cancelled``. Arrays are
    H x W (x C) uint8, uint16 or float in [0, 1].
    """
    opts = UpscaleOptions.of(**options)
    net = load_model(model, device) if isinstance(model, str) else model
    if isinstance(image, Picture):
        return upscale_picture(net, image, opts, progress)
    if isinstance(image, Image.Image):
        out = upscale_picture(net, _from_array(np.asarray(image)), opts, progress)
        return _to_pil(out, image.mode)
    if isinstance(image, np.ndarray):
        out = upscale_picture(net, _from_array(image), opts, progress)
        return _to_array(out, image.dtype, image.ndim)
    return upscale_picture(net, read_image(Path(image)), opts, progress)


def _from_array(arr: np.ndarray) -> Picture:
    """uint8 / uint16 / float array (H x W, H x W x 1, 2, 3 or 4) -> Picture."""
    depth = 16 if arr.dtype == np.uint16 else 8
    px = arr.astype(np.float32) / {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(
        arr.dtype, 1
    )
    if px.ndim == 2:
        px = px[..., None]
    alpha = None
    if px.shape[2] in (2, 4):
        px, alpha = px[..., :-1], px[..., -1]
    return Picture(np.clip(px, 0, 1), alpha, depth)


def _to_array(pic: Picture, dtype: np.dtype, ndim: int) -> np.ndarray:
    px = pic.pixels if pic.alpha is None else np.concatenate([pic.pixels, pic.alpha[..., None]], 2)
    if ndim == 2:
        px = px[..., 0]
    if dtype == np.uint8:
        return np.round(px * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(px * 65535).astype(np.uint16)
    return px.astype(dtype)


def _to_pil(pic: Picture, mode: str) -> Image.Image:
    arr = _to_array(pic, np.dtype(np.uint8), 2 if pic.is_gray and pic.alpha is None else 3)
    return Image.fromarray(arr).convert(mode) if mode in ("P", "1") else Image.fromarray(arr)
