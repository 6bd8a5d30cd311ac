"""Every model on every named degradation (issue 23): PSNR / SSIM-Y of bicubic and each model on
Set5 / Set14 / B100 and on the training folder's held-out images (``split_holdout``, the
images every shipped model's training run held out), with the LR made from the HR by each
named, seeded degradation of ``data.degradations.NAMED`` (``clean``: the official LRx4, and for
the held-out images the MATLAB bicubic downscale).

    .venv/bin/python benchmarks/degradations.py --threads 2 \\
        --model rdsr-x4 --model rdsr-x4-real --model yonos-x4 --model edgesdsr-x4

writes ``benchmarks/results/degradations.md`` (the tables), ``degradations.png`` (each
model's PSNR-Y gain over bicubic per input, on B100 and the held-out images) and
``degradations.json`` (the scores: a later run with ``--add`` scores only its ``--model``s and
keeps the other rows, or with no ``--model`` rewrites the tables; every score is a
deterministic function of the model file and the data).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fastdiffsr.data.datasets import list_images, split_holdout  # noqa: E402
from fastdiffsr.evaluation import evaluate_set  # noqa: E402
from fastdiffsr.train.trainer import TrainConfig  # noqa: E402
from fastdiffsr.upscaler import Upscaler  # noqa: E402
from fastdiffsr.zoo import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100", "held-out")
# the fixed inputs; photo-mix, a training mix where a fifth of the draws are clean, is left out
INPUTS = ("clean", "jpeg60", "noise5", "realesrgan-mild", "realesrgan-severe", "realesrgan-photo")


def held_out_root(data: Path, holdout: int, into: Path) -> Path:
    """``into/held-out/HR`` linking the held-out images, laid out as a benchmark set."""
    folder = into / "held-out" / "HR"
    folder.mkdir(parents=True)
    for f in split_holdout(list_images(data), holdout)[1]:
        (folder / f.name).symlink_to(f.resolve())
    return into


def degraded_roots(roots: dict[str, Path], degradation: str, into: Path) -> dict[str, Path]:
    """Each set laid out again with its LR made once by ``degradation`` (``evaluate_set``
    writes them, as ``fastdiffsr eval --write-lr`` does), so every model reads the same files
    instead of degrading every HR image again."""
    if degradation == "clean":
        return roots
    bicubic, out = load_model("bicubic-x4"), {}
    for s in SETS:
        evaluate_set(bicubic, roots[s], s, degradation=degradation, lr_out=into / "lr")
        folder = into / degradation / s
        folder.mkdir(parents=True)
        (folder / "HR").symlink_to(roots[s] / s / "HR")
        (folder / "LRx4").symlink_to(into / "lr" / s / f"LRx4-{degradation}")
        out[s] = into / degradation
    return out


def scores(model: Upscaler, roots: dict[str, Path]) -> list[list[float]]:
    """[PSNR, SSIM] per set of ``SETS``."""
    results = [evaluate_set(model, roots[s], s)[0] for s in SETS]
    return [[r.psnr, r.ssim] for r in results]


def plot(table: dict[str, dict[str, list[list[float]]]], out: Path) -> None:
    models = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / (len(models) - 1)
    for ax, set_index in zip(axes, (2, 3), strict=True):
        for k, name in enumerate(models[1:]):
            gains = [table[name][d][set_index][0] - table[models[0]][d][set_index][0]
                     for d in INPUTS]
            ax.bar([i + k * width for i in range(len(INPUTS))], gains, width, label=name)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks([i + width * (len(models) - 2) / 2 for i in range(len(INPUTS))], INPUTS,
                      rotation=15)
        ax.set_title(f"{SETS[set_index]}: PSNR-Y gain over bicubic (dB)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", default=[], help="zoo name or file")
    parser.add_argument("--data", type=Path, default=ROOT / "../shared/data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/degradations")
    parser.add_argument("--add", action="store_true",
                        help="keep the rows of the existing .json, score only --model")
    args = parser.parse_args()
    if not (args.model or args.add):
        parser.error("give --model (or --add alone to rewrite the tables from the .json)")
    torch.set_num_threads(args.threads)
    store = args.out.with_suffix(".json")
    table = json.loads(store.read_text()) if args.add else {}
    models = [*args.model] if args.add else ["bicubic-x4", *args.model]
    with tempfile.TemporaryDirectory() as tmp:
        held = held_out_root(args.data / "train", TrainConfig.holdout, Path(tmp))
        roots = {**{s: args.data / "bench" for s in SETS[:3]}, "held-out": held}
        inputs = {d: degraded_roots(roots, d, Path(tmp)) for d in INPUTS} if models else {}
        for name in models:
            model, table[name] = load_model(name), {}
            for degradation in INPUTS:
                table[name][degradation] = scores(model, inputs[degradation])
                print(name, degradation, [f"{p:.2f}" for p, _ in table[name][degradation]],
                      flush=True)
            store.write_text(json.dumps(table, indent=1))
    lines = ["# Models on degraded inputs (x4, PSNR / SSIM-Y)", "",
             "Written by `benchmarks/degradations.py`. Inputs: `clean` is the official LRx4 "
             "(held-out: the MATLAB bicubic downscale); the others are the named, seeded "
             "degradations of `fastdiffsr eval --degradation` made from the HR. held-out: the "
             f"{TrainConfig.holdout} images of `../shared/data/train` that every training run "
             "holds out. Diffusion models at their default sampling steps and seed.", ""]
    for degradation in INPUTS:
        lines += [f"## {degradation}", "", "| model | " + " | ".join(SETS) + " |",
                  "| --- |" + " ---: |" * len(SETS)]
        for name in table:
            cells = [f"{p:.2f} / {q:.4f}" for p, q in table[name][degradation]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    args.out.with_suffix(".md").write_text("\n".join(lines))
    plot(table, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
