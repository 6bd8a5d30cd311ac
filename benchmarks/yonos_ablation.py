"""YONOS-SR ablation: scale distillation vs direct x4 training, 1 vs 4 steps, fine-tuned decoder
vs the autoencoder's own, and the autoencoder's reconstruction (the ceiling of the latent space).

Every model is assembled from one training folder (``trained_stage_model``, with the recipe each
stage trained with: ``OUT/<stage>/recipe.json``), so the rows differ only in the stage they come
from.

    .venv/bin/fastdiffsr train configs/yonos/x4.toml --out runs/yonos-x4 --stage direct_x4
    .venv/bin/python benchmarks/yonos_ablation.py --run runs/yonos-x4 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fastdiffsr.data.datasets import benchmark_pairs, load_pair
from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.methods.yonos.model import YONOS, without_unet
from fastdiffsr.metrics import psnr_y, quantize
from fastdiffsr.tiling import pad_to_requirements
from fastdiffsr.train.checkpoints import stage_weights
from fastdiffsr.train.recipes.latent import trained_stage_model
from fastdiffsr.train.run import stage_recipe
from fastdiffsr.upscaler import UpscaleOptions

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "B100")
ROWS = (  # (label, stage the UNet + decoder come from, steps)
    ("distilled student, fine-tuned decoder (the exported model)", "decoder", 1),
    ("distilled student, fine-tuned decoder", "decoder", 4),
    ("distilled student, autoencoder's decoder", "student_x4", 1),
    ("distilled student, autoencoder's decoder", "student_x4", 4),
    ("direct x4, autoencoder's decoder", "direct_x4", 1),
    ("direct x4, autoencoder's decoder", "direct_x4", 4),
    ("x2 teacher applied at x4, autoencoder's decoder", "teacher_x2", 1),
)


@torch.inference_mode()
def reconstruction_psnr(model: YONOS, root: Path, name: str) -> float:
    """PSNR-Y of Dec(Enc(HR)) with the autoencoder's own decoder: what the latents can hold."""
    f = model.cfg.autoencoder.downsample_factor
    out = []
    for hr_path, lr_path in benchmark_pairs(root, name, model.scale):
        _, hr = load_pair(hr_path, lr_path, model.scale)
        h, w = hr.shape[-2:]
        rec = model.decode(model.encode(pad_to_requirements(hr, f, 1)))[..., :h, :w]
        out.append(psnr_y(quantize(rec.clamp(0, 1)), hr, model.scale).item())
    return float(np.mean(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="training folder of yonos-x4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "yonos_ablation.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = ["| model | steps | " + " | ".join(SETS) + " |",
            "| --- | ---: |" + " ---: |" * len(SETS)]
    for label, stage, steps in ROWS:
        if not stage_weights(args.run, stage).exists():
            rows.append(f"| {label} | {steps} |" + " not trained in this run |" * len(SETS))
            continue
        model = trained_stage_model(stage_recipe(args.run, stage)[2], args.run, stage).eval()
        scores = [evaluate_set(model, args.data, s, UpscaleOptions(sampling_steps=steps))[0].psnr
                  for s in SETS]
        rows.append(f"| {label} | {steps} | " + " | ".join(f"{p:.2f}" for p in scores) + " |")
    student = stage_recipe(args.run, "student_x4")[2]
    ae = trained_stage_model(student, args.run, "student_x4").eval()
    bypass = [evaluate_set(without_unet(ae), args.data, s)[0].psnr for s in SETS]
    rows.append("| UNet bypassed: Dec(z_lr), what the residual x0 starts from | 1 | "
                + " | ".join(f"{p:.2f}" for p in bypass) + " |")
    rec = [reconstruction_psnr(ae, args.data, s) for s in SETS]
    rows.append("| autoencoder reconstruction of HR (ceiling) | - | "
                + " | ".join(f"{p:.2f}" for p in rec) + " |")
    text = "\n".join([
        "# YONOS-SR ablation (yonos-x4 run, PSNR-Y dB, official LRx4, seed 0)", "",
        f"Written by `benchmarks/yonos_ablation.py --run {args.run}` ({args.threads} threads).",
        "All UNets share the autoencoder; student and direct x4 both start from the x2 teacher "
        "and train for the same iterations, so they differ only in the target.", "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
