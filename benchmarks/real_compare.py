"""Side by side on degraded inputs (issue 23): for each held-out training image (the images
every shipped model's training held out) and each named degradation, one row of the same
detailed crop: the degraded LR as a viewer shows it (nearest x4), bicubic, each model, and the
original; the PSNR-Y / SSIM-Y of the whole image under each. A diffusion sampler (a model that
samples in steps from seeded noise) is shown once per ``--seeds`` seed, to show what the seed
changes (RDSR's seeded prior vector is not: one column); ``--model NAME@STEPS`` runs it at
STEPS sampling steps instead of its default.

``--as-is`` adds rows with no ground truth: the held-out photo itself (BSDS300 and T91 images
are JPEG-era scans and camera files, with their own blocks and noise) upscaled x4 as it is.

    .venv/bin/python benchmarks/real_compare.py --model rdsr-x4 --model rdsr-x4-real \\
        --model edgesdsr-x4-real --seeds 0,1 --as-is 1

writes ``benchmarks/results/real_compare.png``. ``--photo FILE`` (repeatable) adds such a row for
any image file; ``outside_photos_as_is.png`` shows the two JPEG files among the sample photos of
``outside_photos.py``, an old portrait and a web image:

    MPL=$(.venv/bin/python -c "import matplotlib; print(matplotlib.get_data_path())")
    SKI=$(.venv/bin/python -c "import skimage, os; print(os.path.dirname(skimage.__file__))")
    .venv/bin/python benchmarks/real_compare.py --model rdsr-x4 --model rdsr-x4-real \\
        --model edgesdsr-x4-real --degradations "" --as-is "" --crop 128 \\
        --photo $MPL/sample_data/grace_hopper.jpg --photo $SKI/data/rocket.jpg \\
        --out benchmarks/results/outside_photos_as_is.png
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
from fastdiffsr.imageio import picture_to_tensor, read_image  # noqa: E402
from fastdiffsr.metrics import psnr_y, quantize, ssim_y  # noqa: E402
from fastdiffsr.train.trainer import TrainConfig  # noqa: E402
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor  # noqa: E402
from fastdiffsr.zoo import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", required=True,
                        help="zoo name or file, NAME@STEPS for STEPS sampling steps")
    parser.add_argument("--degradations", default="jpeg60,noise5,realesrgan-mild")
    parser.add_argument("--images", default="0,2", help="indices among the held-out images")
    parser.add_argument("--crop", type=int, default=96, help="HR crop side")
    parser.add_argument("--seeds", default="0", help="seeds for seeded (diffusion) models")
    parser.add_argument("--as-is", default="", help="held-out images upscaled as they are")
    parser.add_argument("--photo", action="append", default=[], type=Path,
                        help="an image file upscaled as it is (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/real_compare.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    columns = outputs(["bicubic-x4", *args.model], [int(s) for s in args.seeds.split(",")])
    held_out = split_holdout(list_images(ROOT / "../shared/data/train"), TrainConfig.holdout)[1]
    rows = [(held_out[int(i)], int(i), d) for i in args.images.split(",")
            for d in args.degradations.split(",") if d]
    rows += [(held_out[int(i)], int(i), None) for i in args.as_is.split(",") if i]
    rows += [(path, 0, None) for path in args.photo]
    cols = len(columns) + 1 + any(d is not None for _, _, d in rows)  # input, ..., original
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.1 * cols, 2.3 * len(rows)),
                             squeeze=False)
    for r, (path, index, degradation) in enumerate(rows):
        shown = row(path, index, degradation, columns, args.crop)
        for c, (crop, title) in enumerate(shown):
            axes[r, c].imshow(crop.permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].axis("off")
        for c in range(len(shown), cols):
            axes[r, c].axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


def outputs(specs: list[str], seeds: list[int]) -> list[tuple[str, object, UpscaleOptions]]:
    """(title, model, options) per column of each ``NAME[@STEPS]``: a diffusion sampler once
    per seed."""
    columns = []
    for spec in specs:
        name, _, steps = spec.partition("@")
        model = load_model(name)
        sampler = model.seeded and model.default_sampling_steps > 0
        for seed in seeds if sampler else [0]:
            title = Path(name).stem  # a model file by its name, not its path
            title += f", {steps} steps" if steps else ""
            title += f" seed {seed}" if sampler and len(seeds) > 1 else ""
            opts = UpscaleOptions(seed=seed, sampling_steps=int(steps) if steps else None)
            columns.append((title, model, opts))
    return columns


def row(path: Path, index: int, degradation: str | None, columns: list, crop: int) -> list:
    """(crop [3, c, c], title) per shown image. With a degradation the LR is made from the
    image and scored against it; without one the image is the LR (no ground truth)."""
    if degradation is None:
        image = picture_to_tensor(read_image(path).pixels).expand(-1, 3, -1, -1)  # as it is
        side, margin = crop // 4, 16  # the shown window and the context upscaled around it
        y, x = busiest_crop(image, side)
        top, left = max(y - margin, 0), max(x - margin, 0)
        lr = image[..., top : y + side + margin, left : x + side + margin]
        y, x, hr = 4 * (y - top), 4 * (x - left), None
    else:
        lr, hr = load_pair(path, None, 4, degradation, index)
        y, x = busiest_crop(hr, crop)
    images = [(F.interpolate(lr, scale_factor=4, mode="nearest"),
               f"{degradation or path.name + ' as is'} input")]
    for title, model, opts in columns:
        sr = quantize(upscale_tensor(model, lr, opts))
        if hr is not None:
            title += f"\n{psnr_y(sr, hr, 4).item():.2f} dB / {ssim_y(sr, hr, 4).item():.3f}"
        images.append((sr, title))
    if hr is not None:
        images.append((hr, f"original\n{path.name}"))
    return [(img[0, :, y : y + crop, x : x + crop].clamp(0, 1), t) for img, t in images]


if __name__ == "__main__":
    main()
