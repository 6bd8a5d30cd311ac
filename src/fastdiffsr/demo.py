"""``make demo``: draw a sample scene, shrink it x4, upscale it with the default model, and write
the result plus a side-by-side comparison (nearest | bicubic | model | original drawing).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .api import upscale_picture
from .imageio import Picture, picture_to_tensor, tensor_to_pixels, write_image
from .resize import imresize
from .zoo import DEFAULT_MODEL, load_model


def draw_scene(size: int = 512) -> np.ndarray:
    """A synthetic HR test scene (H x W x 3 float): gradients, shapes, stripes, text, rings."""
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    for y in range(int(size * 0.56)):  # sky gradient
        t = y / (size * 0.56)
        d.line([(0, y), (size, y)], fill=(int(70 + 100 * t), int(130 + 80 * t), 230))
    d.ellipse([size * 0.68, size * 0.08, size * 0.86, size * 0.26], fill=(255, 214, 90))
    d.polygon([(0, size * 0.55), (size * 0.3, size * 0.22), (size * 0.6, size * 0.55)],
              fill=(90, 110, 120))
    d.polygon([(size * 0.35, size * 0.55), (size * 0.7, size * 0.3), (size, size * 0.55)],
              fill=(70, 90, 105))
    d.rectangle([0, size * 0.55, size, size], fill=(70, 140, 60))
    for x in range(0, size, 6):  # a fence of thin stripes
        d.line([(x, size * 0.62), (x, size * 0.72)], fill=(240, 235, 220), width=2)
    d.rectangle([size * 0.1, size * 0.75, size * 0.45, size * 0.95], fill=(180, 60, 50))
    for i in range(4):
        x0 = size * (0.13 + 0.08 * i)
        d.rectangle([x0, size * 0.8, x0 + size * 0.05, size * 0.86], fill=(250, 240, 170))
    d.text((size * 0.5, size * 0.77), "fastdiffsr", fill=(255, 255, 255), font_size=size // 12)
    d.text((size * 0.5, size * 0.89), "x4 super-resolution", fill=(20, 20, 20),
           font_size=size // 22)
    arr = np.asarray(img, dtype=np.float32) / 255
    yy, xx = np.mgrid[0:size, 0:size] / size
    r2 = (xx - 0.14) ** 2 + (yy - 0.14) ** 2  # a zone plate: rising spatial frequency
    disc = r2 < 0.11**2
    arr[disc] = (0.5 + 0.5 * np.cos(2 * math.pi * 250 * r2))[disc, None]
    return arr


def side_by_side(parts: list[np.ndarray], gap: int = 6) -> np.ndarray:
    """Concatenate H x W x 3 arrays horizontally with white gaps."""
    h = parts[0].shape[0]
    spacer = np.ones((h, gap, 3), dtype=np.float32)
    row = [parts[0]]
    for p in parts[1:]:
        row += [spacer, p]
    return np.concatenate(row, axis=1)


def main(out_dir: str = "demo_output", model_name: str = DEFAULT_MODEL) -> int:
    out = Path(out_dir)
    hr = picture_to_tensor(draw_scene())
    lr = imresize(hr, 0.25, uint8_passes=True)
    sample = write_image(out / "sample.png", Picture(tensor_to_pixels(lr)))
    model = load_model(model_name)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sr = upscale_picture(model, Picture(tensor_to_pixels(lr)))
    result = write_image(out / f"sample_{model_name}.png", sr)
    s = model.scale
    nearest = tensor_to_pixels(torch.nn.functional.interpolate(lr, scale_factor=s))
    bicubic = tensor_to_pixels(imresize(lr, s))
    cmp = side_by_side([nearest, bicubic, sr.pixels, tensor_to_pixels(hr)])
    comparison = write_image(out / "comparison.png", Picture(cmp))
    print(f"input (drawn, then shrunk x{s}): {sample}")
    print(f"upscaled with {model_name}:      {result}")
    print(f"nearest | bicubic | {model_name} | original: {comparison}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
