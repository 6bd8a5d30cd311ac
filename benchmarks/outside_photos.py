"""Models on photos the project does not contain (issue 23's check): PSNR / SSIM-Y of bicubic and
each model at x4 on seven everyday photos that ship with two Python packages, with the LR made
from each photo by the named, seeded degradations of ``fastdiffsr eval --degradation``
(``clean``: the MATLAB bicubic downscale).

The photos: scikit-image's ``astronaut``, ``camera`` (gray, as RGB), ``chelsea``, ``coffee``,
``motorcycle_left`` and ``rocket`` (a JPEG) and matplotlib's ``grace_hopper`` (a JPEG); 300 to
741 px on a side. The project's data and the training folder hold none of them. Their own
licences are the packages'; nothing of them is committed, only the scores.

    .venv/bin/pip install scikit-image   # its sample photos (matplotlib is a dependency already)
    .venv/bin/python benchmarks/outside_photos.py --threads 2 \\
        --model rdsr-x4 --model rdsr-x4-real --model edgesdsr-x4-real

writes ``benchmarks/results/outside_photos.md``: the mean over the photos per input, and each
model's gain over bicubic, then each photo's gain on the inputs of the check (clean, JPEG 60,
noise 5).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib
import torch

from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.imageio import read_image, write_image
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
SKIMAGE = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
           "rocket.jpg")
INPUTS = ("clean", "jpeg60", "noise5", "realesrgan-mild", "realesrgan-severe")
# each photo's scores on these: the bars are +1.0 dB over bicubic on JPEG 60, +1.5 on
# noise 5, and at most 1 dB under rdsr-x4 on clean input
PER_PHOTO = ("clean", "jpeg60", "noise5")


def photo_files() -> list[Path]:
    try:
        import skimage
    except ImportError:
        sys.exit("error: the photos come with scikit-image: pip install scikit-image")
    data = Path(skimage.__file__).parent / "data"
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [*(data / name for name in SKIMAGE), hopper]


def photo_set(into: Path) -> Path:
    """``into/Photos/HR/<name>.png``, each photo decoded once, laid out as a benchmark set (a
    gray photo is scored as RGB, as ``load_pair`` reads it)."""
    for f in photo_files():
        write_image(into / "Photos" / "HR" / f"{f.stem}.png", read_image(f))
    return into


def tables(names: list[str], scores: dict) -> list[str]:
    """Markdown: mean PSNR / SSIM per input, each model's gain over bicubic, and per photo on
    the checked inputs. ``scores[name, input]``: a ``SetResult``."""
    photos = list(scores[names[0], INPUTS[0]].per_image)
    lines = ["## Mean over the photos: PSNR / SSIM-Y", "",
             "| model | " + " | ".join(INPUTS) + " |", "| --- |" + " ---: |" * len(INPUTS)]
    lines += [f"| {n} | " + " | ".join(f"{scores[n, d].psnr:.2f} / {scores[n, d].ssim:.4f}"
                                        for d in INPUTS) + " |" for n in names]
    lines += ["", "## Gain over bicubic (dB, PSNR-Y)", "",
              "| model | " + " | ".join(INPUTS) + " |", "| --- |" + " ---: |" * len(INPUTS)]
    lines += [f"| {n} | " + " | ".join(f"{scores[n, d].psnr - scores[names[0], d].psnr:+.2f}"
                                        for d in INPUTS) + " |" for n in names[1:]]
    for d in PER_PHOTO:
        base = scores[names[0], d].per_image
        lines += ["", f"## {d}: each photo's gain over bicubic (dB; bicubic's PSNR-Y)", "",
                  "| photo | bicubic | " + " | ".join(names[1:]) + " |",
                  "| --- | ---: |" + " ---: |" * (len(names) - 1)]
        lines += [f"| {p} | {base[p][0]:.2f} | " + " | ".join(
            f"{scores[n, d].per_image[p][0] - base[p][0]:+.2f}" for n in names[1:]) + " |"
            for p in photos]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="zoo name or file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/outside_photos.md")
    args = parser.parse_args()
    if not args.model:
        parser.error("give at least one --model")
    torch.set_num_threads(args.threads)
    specs, scores = ["bicubic-x4", *args.model], {}
    names = [Path(spec).stem for spec in specs]  # a model file by its name, not its path
    with tempfile.TemporaryDirectory() as tmp:
        root = photo_set(Path(tmp))
        for spec, name in zip(specs, names, strict=True):
            model = load_model(spec)
            for d in INPUTS:
                scores[name, d], _ = evaluate_set(model, root, "Photos",
                                                  degradation=None if d == "clean" else d)
                print(name, d, f"{scores[name, d].psnr:.2f}", flush=True)
    head = ["# Models on photos the project does not contain (x4)", "",
            "Written by `benchmarks/outside_photos.py` (its docstring names the photos). "
            "Inputs: `clean` is the MATLAB bicubic downscale of the photo; the others are the "
            "named, seeded degradations of `fastdiffsr eval --degradation` made from it. "
            "Diffusion models at their default sampling steps and seed.", ""]
    args.out.write_text("\n".join([*head, *tables(names, scores)]) + "\n")


if __name__ == "__main__":
    main()
