"""Held-out scores of a trained model under inference settings (sampling steps, LR tile side,
x8 self-ensemble): the images its training run held out (``split_holdout`` of the training
folder, as the trainer's validation), so settings are chosen without touching the benchmark
sets.

    .venv/bin/python benchmarks/heldout.py -n runs/bidiffsr-x4/bidiffsr-x4.safetensors \
        --sampling-steps 50,20,10 --tiles 64,128 --threads 2
    .venv/bin/python benchmarks/heldout.py -n rdsr-x4 --self-ensemble off,on
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from fastdiffsr.data.datasets import list_images, load_pair, split_holdout
from fastdiffsr.metrics import psnr_y, quantize
from fastdiffsr.train.trainer import TrainConfig
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor
from fastdiffsr.zoo import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--model", required=True)
    parser.add_argument("--data", type=Path, default=TrainConfig.data)
    parser.add_argument("--holdout", type=int, default=TrainConfig.holdout)
    parser.add_argument("--sampling-steps", default="1", help="comma-separated step counts")
    parser.add_argument("--tiles", default="0", help="comma-separated LR tile sides (0: auto)")
    parser.add_argument("--self-ensemble", default="off", help="off, on or off,on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    _, held_out = split_holdout(list_images(args.data), args.holdout)
    pairs = [load_pair(f, None, model.scale) for f in held_out]
    print(f"{args.model}: {len(pairs)} held-out images of {args.data}, {args.threads} threads\n")
    print("| sampling steps | LR tile | self-ensemble | PSNR-Y | s / image |\n"
          "| ---: | ---: | --- | ---: | ---: |")
    for steps, tile, ensemble in itertools.product(args.sampling_steps.split(","),
                                                   args.tiles.split(","),
                                                   args.self_ensemble.split(",")):
        opts = UpscaleOptions(sampling_steps=int(steps), tile=int(tile) or None,
                              self_ensemble={"off": False, "on": True}[ensemble])
        t0, scores = time.perf_counter(), []
        for lr, hr in pairs:
            scores.append(psnr_y(quantize(upscale_tensor(model, lr, opts)), hr, model.scale).item())
        seconds = (time.perf_counter() - t0) / len(pairs)
        side = tile if int(tile) else "auto"
        print(f"| {steps} | {side} | {ensemble} | {np.mean(scores):.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
