"""The fast latent stack's ablation (issue 17) at one budget, Set5 / B100 at 1 step, with each
row's 128->512 cost: the LR-grid encoder vs the paper's (the autoencoder's encoder on
bicubic_s(LR)), the light decoder vs ae-f4c16's full one, and Edge-SD-SR vs YONOS-SR.

The variants share the main run's autoencoder stage and x2 teacher (the teacher encodes as the
paper does whatever the variant, and no UNet stage trains the decoder), then train the student
and the decoder stage at a reduced budget, differing in one ``--set``. The full-decoder variant
also shares the LR-grid variant's student and trains only its decoder stage, from an autoencoder
stage that is ae-f4c16 (full decoder) plus the LR-grid encoder (``fulldec-stage`` below).

    F=.venv/bin/fastdiffsr C=configs/edgesdsr/fast.toml M=runs/edgesdsr-fast2  # edgesdsr-x4's
    B="--set student_x4.iterations=1000 --set decoder.iterations=1000"
    for v in lrgrid oldenc; do
      mkdir -p runs/fast-abl-$v && cp -r $M/autoencoder $M/teacher_x2 runs/fast-abl-$v/
    done
    $F train $C --out runs/fast-abl-lrgrid $B
    $F train $C --out runs/fast-abl-oldenc $B --set model.lr_encoder.kind=autoencoder
    .venv/bin/python benchmarks/fast_stack_ablation.py fulldec-stage
    $F train $C --out runs/fast-abl-fulldec --stage decoder $B \\
        --set model.autoencoder.decoder.kind=full
    .venv/bin/python benchmarks/fast_stack_ablation.py table --threads 2

writes ``benchmarks/results/fast_stack_ablation.md`` (rows as they finish).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fastdiffsr.bench import time_upscale
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.train.recipes.latent import trained_stage_model
from fastdiffsr.train.run import stage_recipe
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
SETS = ("Set5", "B100")
ROWS = (  # (label, run folder, stage; "" = a shipped model by name)
    ("LR-grid encoder, light decoder: student + autoencoder's decoder", "fast-abl-lrgrid",
     "student_x4"),
    ("LR-grid encoder, light decoder: decoder stage", "fast-abl-lrgrid", "decoder"),
    ("paper's encoder (Enc(bicubic_s(LR))), light decoder: student + autoencoder's decoder",
     "fast-abl-oldenc", "student_x4"),
    ("paper's encoder, light decoder: decoder stage", "fast-abl-oldenc", "decoder"),
    ("LR-grid encoder, full decoder (ae-f4c16's): decoder stage", "fast-abl-fulldec", "decoder"),
    ("edgesdsr-x4 as shipped (full budget: student 2000, decoder stage 24000)", "edgesdsr-fast2",
     "decoder"),
    ("yonos-x4-fast (the same full budget, stack and seeds)", "yonos-x4-fast", "decoder"),
)


def fulldec_stage() -> None:
    """runs/fast-abl-fulldec: an autoencoder stage of ae-f4c16 (full decoder, same encoder and
    latent scale) plus the LR-grid variant's LR encoder, and that variant's teacher and student."""
    src, dst = RUNS / "fast-abl-lrgrid", RUNS / "fast-abl-fulldec"
    (dst / "autoencoder").mkdir(parents=True, exist_ok=True)
    full = load_file(ROOT / "src/fastdiffsr/weights/components/ae-f4c16.safetensors")
    light = load_file(src / "autoencoder" / "model.safetensors")
    full.update({k: v for k, v in light.items() if k.startswith("lr_encoder.")})
    save_file(full, dst / "autoencoder" / "model.safetensors")
    shutil.copy(src / "autoencoder" / "recipe.json", dst / "autoencoder" / "recipe.json")
    for stage in ("teacher_x2", "student_x4"):
        shutil.copytree(src / stage, dst / stage, dirs_exist_ok=True)


def row(label: str, run: str, stage: str, data: Path) -> str:
    if stage:
        _, _, recipe = stage_recipe(RUNS / run, stage)
        model = trained_stage_model(recipe, RUNS / run, stage).eval()
    else:
        model = load_model(run)
    scores = [f"{evaluate_set(model, data, s)[0].psnr:.2f}" for s in SETS]
    t = time_upscale(model, 128, repeats=5)
    return (f"| {label} | " + " | ".join(scores)
            + f" | {t.flops / 1e9:.1f} | {t.latency_s * 1e3:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["fulldec-stage", "table"])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "fast_stack_ablation.md")
    args = parser.parse_args()
    if args.command == "fulldec-stage":
        fulldec_stage()
        return
    torch.set_num_threads(args.threads)
    lines = ["# The fast latent stack: ablation", "",
             f"`benchmarks/fast_stack_ablation.py table --threads {args.threads}`; PSNR-Y (dB) "
             "at 1 step, seed 0; cost of one 128->512 upscale (GFLOPs, ms on "
             f"{args.threads} threads). Variants: teacher_x2 1200 (shared), student_x4 1000, "
             "decoder stage 1000 iterations; see the script's docstring for the commands.", "",
             "| variant | " + " | ".join(SETS) + " | GFLOPs | ms |",
             "| --- |" + " ---: |" * (len(SETS) + 2)]
    for label, run, stage in ROWS:
        if stage and not (RUNS / run / stage / "model.safetensors").exists():
            print(f"skipped (not trained): {label}")
            continue
        lines.append(row(label, run, stage, args.data))
        args.out.write_text("\n".join(lines) + "\n")
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
