"""What does RDSR's prior buy? The shipped decoder evaluated with different prior vectors.

* diffusion (shipped): z_hat from LPE_lr + the 4-step chain, seeds 0..3 (seed spread);
* oracle: z from the frozen stage-1 LPE_hr, which sees the HR image (an upper bound);
* zero / mean: a constant prior for every image (no image-specific information).

    .venv/bin/python benchmarks/rdsr_prior_ablation.py --run runs/rdsr-x4
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from fastdiffsr.data.datasets import benchmark_pairs, load_pair
from fastdiffsr.methods.rdsr.model import RDSR, PriorEncoder
from fastdiffsr.metrics import psnr_y, quantize
from fastdiffsr.train.checkpoints import substate
from fastdiffsr.train.recipes.rdsr import hr_prior_input
from fastdiffsr.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100")
Prior = Callable[[Tensor, Tensor], Tensor]  # (lr, hr) -> z [1, D]


def score(model: RDSR, root: Path, name: str, prior: Prior) -> float:
    """Mean PSNR-Y of RepD(LR, prior(LR, HR)) with the deployed fold."""
    out = []
    for hr_path, lr_path in benchmark_pairs(root, name, model.scale):
        lr, hr = load_pair(hr_path, lr_path, model.scale)
        with torch.inference_mode():
            sr = model.fold(prior(lr, hr))(lr)
        out.append(psnr_y(quantize(sr), hr, model.scale).item())
    return float(np.mean(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="training folder of rdsr-x4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "rdsr_prior_ablation.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("rdsr-x4")
    lpe_hr = PriorEncoder(3 + 3 * model.scale**2, model.cfg)
    stage1 = load_file(args.run / "prior" / "model.safetensors")
    lpe_hr.load_state_dict(substate(stage1, "lpe_hr."))
    lpe_hr.eval()
    lr0, _ = load_pair(*benchmark_pairs(args.data, "Set5", 4)[0], 4)
    mean_z = torch.stack([model.estimate_prior(lr0, s) for s in range(16)]).mean(0).detach()
    priors: dict[str, Prior] = {
        **{f"diffusion, seed {s}": (lambda lr, hr, s=s: model.estimate_prior(lr, s))
           for s in range(4)},
        "oracle (LPE_hr sees HR)": lambda lr, hr: lpe_hr(hr_prior_input(lr, hr, model.scale)),
        "zero vector": lambda lr, hr: torch.zeros_like(mean_z),
        "one fixed vector (Set5 img 1, mean of 16 seeds)": lambda lr, hr: mean_z,
    }
    rows = ["| prior given to the shipped RepD | " + " | ".join(SETS) + " |",
            "| --- |" + " ---: |" * len(SETS)]
    for label, prior in priors.items():
        rows.append(f"| {label} | " + " | ".join(f"{score(model, args.data, s, prior):.2f}"
                                                  for s in SETS) + " |")
    text = "\n".join(["# RDSR prior ablation (rdsr-x4, PSNR-Y dB, official LRx4)", "",
                      "Written by `benchmarks/rdsr_prior_ablation.py`.", "", *rows, ""])
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
