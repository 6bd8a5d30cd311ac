"""BI-DiffSR ablation on Set5 / B100 (PSNR-Y dB, official LRx4, seed 0): the trained
full-precision twin against the binary network initialised from it, and the binary network at
1 / 4 / 10 sampling steps. Both models come from one training folder (the twin stage's weights
with the recipe it trained with, ``OUT/twin/recipe.json``, and the exported model).

Each ``--twin-run`` adds the twin of another training folder at its own formulation and default
sampling steps: formulations compared at one budget (the twin stage alone, the same iterations).

    .venv/bin/fastdiffsr train configs/bidiffsr/x4.toml --out runs/bidiffsr-x4
    .venv/bin/python benchmarks/bidiffsr_ablation.py --run runs/bidiffsr-x4 --threads 2 \
        [--twin-run runs/bidiffsr-paper-form --twin-run runs/bidiffsr-ours-1000]
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


def formulation(recipe) -> str:
    """The recipe's formulation in words (the model config's switches and the recipe's)."""
    m = recipe.model
    target = "residual over bicubic" if m.residual else "HR"
    start = "quiet" if recipe.quiet_init else "default"
    return (f"{m.prediction}-prediction of the {target}, {m.spacing} steps, "
            f"t {recipe.train_timesteps}, {start} init")


def twin_row(run: Path, label: str) -> tuple:
    """(label, formulation, model, iterations, sampling steps) of ``run``'s trained twin, at its
    recipe's default sampling steps."""
    _, _, recipe = stage_recipe(run, "twin")
    model = twin_model(recipe, load_stages(run, ["twin"])).eval()
    return (label, formulation(recipe), model, recipe.twin.iterations,
            recipe.model.sampling_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="training folder of bidiffsr-x4")
    parser.add_argument("--twin-run", type=Path, action="append", default=[],
                        help="another training folder whose twin is a row (repeatable)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "bidiffsr_ablation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, name, recipe = stage_recipe(args.run, "twin")
    binary = load_model(args.run / f"{name}.safetensors")
    rows = ["| model | formulation | iterations | sampling steps | " + " | ".join(SETS) + " |",
            "| --- | --- | ---: | ---: |" + " ---: |" * len(SETS)]
    runs = [twin_row(args.run, "full-precision twin")]
    runs += [("binary, initialised from the twin (the exported model)", formulation(recipe),
              binary, f"{recipe.twin.iterations} + {recipe.diffusion.iterations}", n)
             for n in (1, 4, 10)]
    runs += [twin_row(other, f"full-precision twin (`{other}`)") for other in args.twin_run]
    for label, form, model, iterations, steps in runs:
        opts = UpscaleOptions(sampling_steps=steps)
        scores = [evaluate_set(model, args.data, s, opts)[0].psnr for s in SETS]
        rows.append(f"| {label} | {form} | {iterations} | {steps} | "
                    + " | ".join(f"{p:.2f}" for p in scores) + " |")
    text = "\n".join([
        "# BI-DiffSR ablation (PSNR-Y dB, official LRx4, seed 0)", "",
        f"Written by `benchmarks/bidiffsr_ablation.py --run {args.run}"
        + "".join(f" --twin-run {r}" for r in args.twin_run) + f"` ({args.threads} threads).",
        "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
