"""What the seed changes (issue 23: a diffusion model should earn its place by restoring seeded
texture where a regression model smooths). For each seeded model and each input (clean and
named degradations), on the training folder's held-out images (``split_holdout``: no benchmark
set plays a part): the PSNR-Y / SSIM-Y of each seed's output, and how far two seeds' outputs
lie apart, per pixel in 8-bit levels (mean and 99.9th percentile of |a - b| over RGB) and as
the PSNR of one against the other.

    .venv/bin/python benchmarks/seed_variation.py --model edgesdsr-x4-real --model edgesdsr-x4 \\
        --model yonos-x4 --model bidiffsr-x4 --threads 2

writes ``benchmarks/results/seed_variation.md``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
from pathlib import Path

import torch

from fastdiffsr.data.datasets import list_images, load_pair, split_holdout
from fastdiffsr.metrics import psnr_y, quantize, ssim_y
from fastdiffsr.train.trainer import TrainConfig
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ("bicubic", "jpeg60", "noise5", "realesrgan-mild")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", required=True, help="zoo name or file")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sampling-steps", default="0,4", help="0: the model's default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/seed_variation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    held_out = split_holdout(list_images(ROOT / "../shared/data/train"), TrainConfig.holdout)[1]
    lines = [
        "# What the seed changes", "",
        f"`benchmarks/seed_variation.py --seeds {args.seeds} --sampling-steps "
        f"{args.sampling_steps} --threads {args.threads}`, {platform.machine()}, "
        f"torch {torch.__version__}; the {len(held_out)} held-out training images, x4, each LR "
        "made by the named, seeded degradation (`bicubic`: the clean MATLAB downscale). PSNR-Y "
        "/ SSIM-Y: mean over images and seeds (min-max over seeds of the per-seed means). "
        "Seed pairs: every pair of seeds on every image; |a - b| in 8-bit levels over RGB; "
        "a vs b: PSNR-Y of one seed's output against the other's (inf: identical).", "",
        "| model | steps | input | PSNR-Y | SSIM-Y | mean \\|a - b\\| | 99.9% \\|a - b\\| "
        "| a vs b PSNR-Y |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name in args.model:
        model = load_model(name)
        if not model.seeded:
            raise SystemExit(f"error: {name} does not use a seed")
        for steps in (int(s) for s in args.sampling_steps.split(",")):
            shown = steps or model.default_sampling_steps
            for degradation in INPUTS:
                row = variation(model, held_out, degradation, seeds, steps or None)
                lines.append(f"| `{name}` | {shown} | {degradation} | {row} |")
                print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


def variation(model, files: list[Path], degradation: str, seeds: list[int],
              steps: int | None) -> str:
    """The table row's cells for one model, input and number of steps."""
    psnr = torch.zeros(len(files), len(seeds))
    ssim = torch.zeros_like(psnr)
    diffs, apart = [], []
    for i, path in enumerate(files):
        lr, hr = load_pair(path, None, 4, degradation, i)
        outs = []
        for j, seed in enumerate(seeds):
            sr = quantize(upscale_tensor(model, lr, UpscaleOptions(seed=seed,
                                                                   sampling_steps=steps)))
            psnr[i, j], ssim[i, j] = psnr_y(sr, hr, 4), ssim_y(sr, hr, 4)
            outs.append(sr)
        for a, b in itertools.combinations(outs, 2):
            diffs.append(((a - b).abs() * 255).flatten())
            apart.append(psnr_y(a, b, 4).item())
    d = torch.cat(diffs)
    per_seed_p, per_seed_s = psnr.mean(0), ssim.mean(0)
    p_spread = f"({per_seed_p.min():.2f}-{per_seed_p.max():.2f})"
    s_spread = f"({per_seed_s.min():.4f}-{per_seed_s.max():.4f})"
    sample = d[:: max(1, d.numel() // 10**6)]  # torch.quantile takes at most 2^24 values
    return (f"{psnr.mean():.2f} {p_spread} | {ssim.mean():.4f} {s_spread} | {d.mean():.2f} | "
            f"{torch.quantile(sample, 0.999):.1f} | "
            f"{sum(apart) / len(apart):.1f}")


if __name__ == "__main__":
    main()
