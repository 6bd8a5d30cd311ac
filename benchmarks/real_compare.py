"""Side by side on degraded inputs (issue 23): for each held-out training image (the images
every shipped model's training held out) and each named degradation, one row of the same
detailed crop: the degraded LR as a viewer shows it (nearest x4), bicubic, each model, and the
original; the PSNR-Y of the whole image under each.

    .venv/bin/python benchmarks/real_compare.py --model rdsr-x4 --model rdsr-x4-real

writes ``benchmarks/results/real_compare.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fastdiffsr.data.datasets import list_images, load_pair, split_holdout  # noqa: E402
from fastdiffsr.evaluation import busiest_crop  # noqa: E402
from fastdiffsr.metrics import psnr_y, quantize  # noqa: E402
from fastdiffsr.train.trainer import TrainConfig  # noqa: E402
from fastdiffsr.upscaler import upscale_tensor  # noqa: E402
from fastdiffsr.zoo import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", required=True, help="zoo name or file")
    parser.add_argument("--degradations", default="jpeg60,noise5,realesrgan-mild")
    parser.add_argument("--images", default="0,2", help="indices among the held-out images")
    parser.add_argument("--crop", type=int, default=96, help="HR crop side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/real_compare.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["bicubic-x4", *args.model]
    models = [load_model(n) for n in names]
    held_out = split_holdout(list_images(ROOT / "../shared/data/train"), TrainConfig.holdout)[1]
    rows = [(int(i), d) for i in args.images.split(",") for d in args.degradations.split(",")]
    cols = len(names) + 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.1 * cols, 2.3 * len(rows)),
                             squeeze=False)
    for r, (index, degradation) in enumerate(rows):
        path = held_out[index]
        lr, hr = load_pair(path, None, 4, degradation, index)
        y, x = busiest_crop(hr, args.crop)
        shown = [(F.interpolate(lr, scale_factor=4, mode="nearest"), f"{degradation} input")]
        for name, model in zip(names, models, strict=True):
            sr = quantize(upscale_tensor(model, lr))
            shown.append((sr, f"{name}\n{psnr_y(sr, hr, 4).item():.2f} dB"))
        shown.append((hr, f"original\n{path.name}"))
        for c, (img, title) in enumerate(shown):
            crop = img[0, :, y : y + args.crop, x : x + args.crop].clamp(0, 1)
            axes[r, c].imshow(crop.permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
