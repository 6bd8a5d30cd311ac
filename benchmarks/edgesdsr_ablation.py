"""Edge-SD-SR ablation at 1 step on Set5 and B100: conditioning (both / concat only / forward
only), jointly trained LR encoder vs one shared frozen encoder, fine-tuned decoder vs the
autoencoder's own, and the UNet bypassed (what the jointly trained LR encoder does alone).

The switches are compared on four runs of configs/edgesdsr/x4.toml at one reduced budget (the
main run's teacher_x2 + student_x4 would take about two hours of a CPU core per variant), each
differing from the "both / joint" run in one ``--set``; all share the autoencoder (yonos-x4's)
and seeds, and are compared on their students with the autoencoder's decoder. The main run
(full budget) gives the decoder rows. Each model is built from the recipe its stage trained
with (``OUT/<stage>/recipe.json``), so the table does not depend on today's config file.

    F=.venv/bin/fastdiffsr C=configs/edgesdsr/x4.toml
    $F train $C --out runs/edgesdsr-x4
    run() {  # VARIANT [--set KEY=VALUE]
      v=$1; shift
      for s in autoencoder teacher_x2 student_x4; do
        $F train $C --out runs/edgesdsr-abl-$v --stage $s \
          --set teacher_x2.iterations=400 --set student_x4.iterations=500 "$@"
      done
    }
    run both; run concat --set model.conditioning=concat
    run forward --set model.conditioning=forward --set model.unet.in_channels=16
    run shared --set lr_encoder=shared
    .venv/bin/python benchmarks/edgesdsr_ablation.py --run runs/edgesdsr-x4 --threads 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.methods.yonos.model import without_unet
from fastdiffsr.train.checkpoints import stage_weights
from fastdiffsr.train.recipes.latent import trained_stage_model
from fastdiffsr.train.run import stage_recipe

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "B100")
VARIANTS = ("both", "concat", "forward", "shared")  # the ablation runs (see above)
MAIN_ROWS = (  # (label, stage the UNet + decoder come from, UNet bypassed)
    ("full budget, fine-tuned decoder (the exported model)", "decoder", False),
    ("full budget, autoencoder's decoder", "student_x4", False),
    ("full budget, UNet bypassed: Dec(z_lr), the trained LR encoder alone", "student_x4", True),
)


def iterations(folder: Path, stage: str) -> int:
    """The last iteration a stage logged (its trained iterations)."""
    lines = (folder / stage / "log.jsonl").read_text().splitlines()
    return max(json.loads(line)["iteration"] for line in lines if line.strip())


def row(args, label: str, folder: Path, stage: str, bypass: bool) -> str:
    _, _, recipe = stage_recipe(folder, stage)
    model = trained_stage_model(recipe, folder, stage).eval()
    model = without_unet(model) if bypass else model
    scores = [evaluate_set(model, args.data, s)[0].psnr for s in SETS]
    budget = f"{iterations(folder, 'teacher_x2')} + {iterations(folder, 'student_x4')}"
    decoder = "fine-tuned" if stage == "decoder" else "autoencoder's"
    return (f"| {label} | {recipe.model.conditioning} | {recipe.lr_encoder} | {budget} | "
            f"{decoder} | " + " | ".join(f"{p:.2f}" for p in scores) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="training folder of edgesdsr-x4")
    parser.add_argument("--ablations", type=Path, default=ROOT / "runs" / "edgesdsr-abl",
                        help="folder prefix of the ablation runs (PREFIX-both, PREFIX-concat, ...)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "edgesdsr_ablation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [(label, args.run, stage, bypass) for label, stage, bypass in MAIN_ROWS]
    runs += [(f"ablation: {v}", Path(f"{args.ablations}-{v}"), "student_x4", False)
             for v in VARIANTS]
    missing = [str(stage_weights(f, s)) for _, f, s, _ in runs if not stage_weights(f, s).exists()]
    if missing:
        parser.error("missing trained stages (see the commands in --help): " + ", ".join(missing))
    rows = ["| run | conditioning | LR encoder | iterations (teacher + student) | decoder | "
            + " | ".join(SETS) + " |", "| --- | --- | --- | ---: | --- |" + " ---: |" * len(SETS)]
    rows += [row(args, *r) for r in runs]
    text = "\n".join([
        "# Edge-SD-SR ablation (PSNR-Y dB, official LRx4, 1 step, seed 0)", "",
        f"Written by `benchmarks/edgesdsr_ablation.py --run {args.run}` ({args.threads} threads).",
        "The ablation runs share the autoencoder, seeds and budget and differ from the "
        "\"both\" run in one switch.", "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
