"""Edge-SD-SR ablation at 1 step on Set5 and B100: conditioning (both / concat only / forward
only), jointly trained LR encoder vs one shared frozen encoder, fine-tuned decoder vs the
autoencoder's own.

The ablation runs differ from configs/edgesdsr/x4.toml in one switch each and share its
autoencoder (yonos-x4's), seeds and budgets; they stop after ``student_x4``, so the switches are
compared on the students (before decoder fine-tuning), next to the main run's student; the main
run's ``decoder`` stage gives the fine-tuned decoder row.

    F=.venv/bin/fastdiffsr
    $F train configs/edgesdsr/x4.toml --out runs/edgesdsr-x4
    for v in concat forward shared; do
      for s in autoencoder teacher_x2 student_x4; do
        $F train configs/edgesdsr/ablation_$v.toml --out runs/edgesdsr-x4-$v --stage $s
      done
    done
    .venv/bin/python benchmarks/edgesdsr_ablation.py --run runs/edgesdsr-x4 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.methods.edgesdsr.recipe import assemble
from fastdiffsr.train.run import load_recipe
from fastdiffsr.train.trainer import stage_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "edgesdsr"
SETS = ("Set5", "B100")
ROWS = (  # (label, run: "main" or an ablation, stage the UNet + decoder come from)
    ("Edge-SD-SR, fine-tuned decoder (the exported model)", "main", "decoder"),
    ("Edge-SD-SR student, autoencoder's decoder", "main", "student_x4"),
    ("concat only", "concat", "student_x4"),
    ("forward only", "forward", "student_x4"),
    ("shared frozen encoder", "shared", "student_x4"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="training folder of edgesdsr-x4")
    parser.add_argument("--ablations", type=Path, default=None,
                        help="folder prefix of the ablation runs (default: RUN, i.e. RUN-concat, "
                             "RUN-forward, RUN-shared)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "edgesdsr_ablation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prefix = args.ablations or args.run
    runs = {"main": (CONFIGS / "x4.toml", args.run)}
    runs.update({v: (CONFIGS / f"ablation_{v}.toml", Path(f"{prefix}-{v}"))
                 for v in ("concat", "forward", "shared")})
    missing = [str(stage_weights(runs[r][1], s)) for _, r, s in ROWS
               if not stage_weights(runs[r][1], s).exists()]
    if missing:
        parser.error("missing trained stages (see the commands at the top of this script): "
                     + ", ".join(missing))
    rows = ["| model | conditioning | LR encoder | decoder | " + " | ".join(SETS) + " |",
            "| --- | --- | --- | --- |" + " ---: |" * len(SETS)]
    for label, run, stage in ROWS:
        config, folder = runs[run]
        _, _, recipe = load_recipe(config)
        model = assemble(recipe, folder, stage).eval()
        scores = [evaluate_set(model, args.data, s)[0].psnr for s in SETS]
        decoder = "fine-tuned" if stage == "decoder" else "autoencoder's"
        rows.append(f"| {label} | {recipe.model.conditioning} | {recipe.lr_encoder} | {decoder} | "
                    + " | ".join(f"{p:.2f}" for p in scores) + " |")
    text = "\n".join([
        "# Edge-SD-SR ablation (edgesdsr-x4 runs, PSNR-Y dB, official LRx4, 1 step, seed 0)", "",
        f"Written by `benchmarks/edgesdsr_ablation.py --run {args.run}` ({args.threads} threads).",
        "Every run starts from the same autoencoder (yonos-x4's) and trains teacher_x2 and "
        "student_x4 with the same seeds and steps; the ablation rows differ from the second row "
        "in one switch only.", "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
