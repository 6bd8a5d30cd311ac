"""BI-DiffSR ablation on Set5 / B100 (PSNR-Y dB, official LRx4, seed 0): the trained
full-precision twin against the binary network initialised from it, and the binary network at
1 / 4 / 10 sampling steps. Both models come from one training folder (the twin stage's weights
with the recipe it trained with, ``OUT/twin/recipe.json``, and the exported model).

    .venv/bin/fastdiffsr train configs/bidiffsr/x4.toml --out runs/bidiffsr-x4
    .venv/bin/python benchmarks/bidiffsr_ablation.py --run runs/bidiffsr-x4 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.train.checkpoints import load_stages
from fastdiffsr.train.recipes.bidiffsr import twin_model
from fastdiffsr.train.run import stage_recipe
from fastdiffsr.upscaler import UpscaleOptions
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "B100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="training folder of bidiffsr-x4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bidiffsr_ablation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, name, recipe = stage_recipe(args.run, "twin")
    twin = twin_model(recipe, load_stages(args.run, ["twin"])).eval()
    binary = load_model(args.run / f"{name}.safetensors")
    rows = ["| model | iterations | sampling steps | " + " | ".join(SETS) + " |",
            "| --- | ---: | ---: |" + " ---: |" * len(SETS)]
    runs = [("full-precision twin", twin, recipe.twin.iterations, 1)]
    runs += [("binary, initialised from the twin (the exported model)", binary,
              f"{recipe.twin.iterations} + {recipe.diffusion.iterations}", n) for n in (1, 4, 10)]
    for label, model, iterations, steps in runs:
        opts = UpscaleOptions(sampling_steps=steps)
        scores = [evaluate_set(model, args.data, s, opts)[0].psnr for s in SETS]
        rows.append(f"| {label} | {iterations} | {steps} | "
                    + " | ".join(f"{p:.2f}" for p in scores) + " |")
    text = "\n".join([
        "# BI-DiffSR ablation (PSNR-Y dB, official LRx4, seed 0)", "",
        f"Written by `benchmarks/bidiffsr_ablation.py --run {args.run}` ({args.threads} threads).",
        "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
