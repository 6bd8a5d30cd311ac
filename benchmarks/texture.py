"""Texture against fidelity (issue 23): does a model put back fine detail where an L1-trained one
smooths, and at what PSNR / SSIM cost? For each model and input (clean and named degradations),
on the training folder's held-out images (``split_holdout``: no benchmark set plays a part):
PSNR-Y, SSIM-Y and *detail*, the high-frequency energy of the output relative to the original's:

    detail = mean(HP(SR_y)^2) / mean(HP(HR_y)^2),   HP(y) = y - G(y), G a Gaussian blur (sigma 1.5)

over the Y channel with the metrics' 4 px border crop, and *grid*, a fixed pattern that repeats
with every LR pixel (what the first adversarial fine-tune drew, and what detail alone counts as
texture):

    grid = RMS over the 16 phases (i, j) of mean(HP(SR_y)[i::4, j::4])   (Y levels, 0..255)

In a natural image every phase's mean high-pass is near 0; a decoder whose 4x4 sub-pixel
outputs carry a bias draws a grid of that amplitude. Bicubic and a model that returns the
conditional mean sit well below 1; a model that draws texture comes closer to it (or above: a
detail score says nothing about whether the texture is right, the PSNR and SSIM say what it
costs, ``real_compare.py`` shows it). No pretrained perceptual network (LPIPS) can be downloaded
here, so this is the number offered instead.

    .venv/bin/python benchmarks/texture.py --model rdsr-x4-real --model edgesdsr-x4-real \\
        --model runs/edgesdsr-x4-real-gan/edgesdsr-x4-real-gan.safetensors --threads 2

writes ``benchmarks/results/texture.md``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from fastdiffsr.data.datasets import list_images, load_pair, split_holdout
from fastdiffsr.data.degradations import blur, gaussian_kernel
from fastdiffsr.metrics import psnr_y, quantize, rgb_to_y, ssim_y
from fastdiffsr.train.trainer import TrainConfig
from fastdiffsr.upscaler import upscale_tensor
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
CROP = 4  # the metrics' border crop at x4
HIGH_PASS = gaussian_kernel(9, 1.5, 1.5, 0.0)


def high_frequency_energy(image: torch.Tensor) -> float:
    """mean(HP(Y)^2) of an RGB image [1, 3, H, W] in [0, 1], inside the border crop."""
    return float(high_pass_y(image).square().mean())


def high_pass_y(image: torch.Tensor) -> torch.Tensor:
    """HP(Y) [1, 1, H - 8, W - 8] of an RGB image [1, 3, H, W] in [0, 1], inside the border
    crop (a multiple of the scale: the crop keeps each pixel's phase)."""
    y = rgb_to_y(image)
    return (y - blur(y, HIGH_PASS))[..., CROP:-CROP, CROP:-CROP]


def grid_levels(image: torch.Tensor, period: int = 4) -> float:
    """RMS over the period^2 phases of the mean high-pass Y at each phase (levels)."""
    high = high_pass_y(image)
    means = torch.stack([high[..., i::period, j::period].mean()
                         for i in range(period) for j in range(period)])
    return float(means.square().mean().sqrt())


def scores(model, files: list[Path], degradation: str) -> tuple[float, ...]:
    """(PSNR-Y, SSIM-Y, detail, grid), means over the images; seed 0, default sampling
    steps."""
    rows = []
    for index, path in enumerate(files):
        lr, hr = load_pair(path, None, 4, degradation, index)
        sr = quantize(upscale_tensor(model, lr))
        rows.append((psnr_y(sr, hr, CROP).item(), ssim_y(sr, hr, CROP).item(),
                     high_frequency_energy(sr) / high_frequency_energy(hr), grid_levels(sr)))
    return tuple(sum(column) / len(rows) for column in zip(*rows, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="zoo name or file")
    parser.add_argument("--inputs", default="bicubic,jpeg60,realesrgan-mild",
                        help="degradations of the LR (bicubic: the clean downscale)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/texture.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    held_out = split_holdout(list_images(ROOT / "../shared/data/train"), TrainConfig.holdout)[1]
    inputs = args.inputs.split(",")
    originals = [load_pair(path, None, 4, "bicubic", 0)[1] for path in held_out]
    lines = ["# Texture against fidelity", "",
             f"`benchmarks/texture.py --inputs {args.inputs}`, {platform.machine()}, torch "
             f"{torch.__version__}; the {len(held_out)} held-out training images, x4, each LR "
             "made by the named, seeded degradation. detail: the output's high-frequency "
             "energy over the original's (HP = Y minus its Gaussian blur, sigma 1.5; 1: as "
             "much fine detail as the original). grid: the RMS over the 16 phases mod 4 of the "
             "output's mean high-pass Y, in levels (the originals: "
             f"{sum(map(grid_levels, originals)) / len(originals):.2f}). Means over the images; "
             "seed 0.", "",
             "| model | input | PSNR-Y | SSIM-Y | detail | grid |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for spec in ["bicubic", *args.model]:
        model = load_model(spec)
        for degradation in inputs:
            psnr, ssim, detail, grid = scores(model, held_out, degradation)
            lines.append(f"| `{Path(spec).stem}` | {degradation} | {psnr:.2f} | {ssim:.4f} | "
                         f"{detail:.2f} | {grid:.2f} |")
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
