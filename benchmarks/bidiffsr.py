"""BI-DiffSR benchmark: quality of a trained model at several sampling-step counts, and the cost
of the paper and x4 configs, each beside its full-precision twin.

Quality (with ``--model``): PSNR / SSIM-Y on ``--sets`` at each of ``--sampling-steps`` (seed
0), beside bicubic. Cost, for each config: params (binary / 32 + FP) and OPs (binary / 64 + FP
multiply-adds, 256x256 output) against the twin that stores and computes every binary conv in
float32; model file sizes (packed bits vs float32 weights, binarised layers and whole file);
latency of one UNet evaluation at 64x64 through each path of the binary layers: the simulated
float conv on +-1 values, the torch XNOR + popcount reference (int64 bit ops), the compiled
kernel (``nn/xnor.cpp``), and the full-precision twin (same shapes, float activations and
weights). Per layer: every distinct binary conv of a config at the input (shape and memory
layout) it sees in that UNet evaluation, timed alone through the same paths and as the twin's
float conv.

    .venv/bin/python benchmarks/bidiffsr.py --threads 2 \
        --model runs/bidiffsr-x4/bidiffsr-x4.safetensors --sets Set5 --sampling-steps 50,20,10

writes ``benchmarks/results/bidiffsr.md``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from fastdiffsr.evaluation import evaluate_set
from fastdiffsr.methods.bidiffsr import BIDiffSR
from fastdiffsr.nn.binary import PackedBinaryConv2d, binary_complexity, float_path
from fastdiffsr.train.run import load_recipe
from fastdiffsr.upscaler import UpscaleOptions
from fastdiffsr.zoo import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
BICUBIC = "bicubic-x4"


def median_seconds(fn, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        fn()  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def unet_seconds(model: BIDiffSR, side: int, repeats: int) -> float:
    """Median seconds of one UNet evaluation on a [1, 3, side, side] input."""
    x, t = torch.randn(1, 3, side, side), torch.tensor([1000])
    return median_seconds(lambda: model.unet(x, x, t), repeats)


def set_path(model: BIDiffSR, path: str) -> None:
    for m in model.modules():
        if isinstance(m, PackedBinaryConv2d):
            m.path = path


PATHS = ("float", "torch", "kernel")  # the simulated float conv, the torch reference, C++


def layer_rows(name: str, packed: BIDiffSR, side: int, repeats: int) -> list[str]:
    """Each distinct binary conv (its input shape and memory layout in one UNet evaluation at
    side^2) timed through every path and as a float conv of the same shape (the twin's), on an
    input of that shape and layout."""
    shapes: dict[tuple, PackedBinaryConv2d] = {}

    def record(m: PackedBinaryConv2d, inp: tuple, out: torch.Tensor) -> None:
        x = inp[0]
        nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        shapes.setdefault((*x.shape[1:], m.c_out, m.kernel, nhwc), m)

    hooks = [m.register_forward_hook(record)
             for m in packed.modules() if isinstance(m, PackedBinaryConv2d)]
    x, t = torch.randn(1, 3, side, side), torch.tensor([1000])
    # on the kernel path a BIConv runs fused, never calling its conv (nor the hooks)
    with torch.inference_mode(), float_path(packed):
        packed.unet(x, x, t)
    for h in hooks:
        h.remove()
    rows = []
    for (c, h, w, o, k, nhwc), layer in sorted(shapes.items()):
        layout = torch.channels_last if nhwc else torch.contiguous_format
        signs = torch.randint(-1, 2, (1, c, h, w)).float().contiguous(memory_format=layout)
        real = torch.randn(1, c, h, w).contiguous(memory_format=layout)
        twin = nn.Conv2d(c, o, k, padding=k // 2, bias=False)
        ms = []
        for path in PATHS:
            layer.path = path
            ms.append(1e3 * median_seconds(lambda f=layer, a=signs: f(a), repeats))
        layer.path = "auto"
        ms.append(1e3 * median_seconds(lambda f=twin, a=real: f(a), repeats))
        rows.append(f"| {name} | {c} -> {o}, {k}x{k} at {h}x{w} | {'NHWC' if nhwc else 'NCHW'} | "
                    + " | ".join(f"{v:.3f}" for v in ms)
                    + f" | {ms[0] / ms[2]:.1f}x | {ms[3] / ms[2]:.1f}x |")
    return rows


def binary_bytes(model: BIDiffSR) -> tuple[int, int]:
    """(packed bytes: bits + float32 scales, float32 bytes of the same weights)."""
    packed = [m for m in model.modules() if isinstance(m, PackedBinaryConv2d)]
    bits = sum(m.bits.numel() + 4 * m.scale.numel() for m in packed)
    return bits, sum(4 * m.c_out * m.c_in * m.kernel**2 for m in packed)


def row(name: str, model: BIDiffSR, folder: Path, side: int, repeats: int
        ) -> tuple[list[str], BIDiffSR]:
    x, t = torch.randn(1, 3, 256, 256), torch.tensor([1000])
    c = binary_complexity(model, lambda: model.unet(x, x, t))
    float_file = save_model(model, folder / f"{name}-float.safetensors").stat().st_size
    packed = copy.deepcopy(model)
    packed.fuse()
    packed_file = save_model(packed, folder / f"{name}-packed.safetensors").stat().st_size
    bits, floats = binary_bytes(packed)
    ms = []
    for path in PATHS:
        set_path(packed, path)
        ms.append(1e3 * unet_seconds(packed, side, repeats))
    twin = BIDiffSR(replace(model.cfg, binarize=False)).eval()
    ms.append(1e3 * unet_seconds(twin, side, repeats))
    set_path(packed, "auto")
    return [name, f"{c.params / 1e6:.3f}", f"{(c.binary_params + c.fp_params) / 1e6:.2f}",
            f"{c.ops / 1e9:.2f}", f"{(c.binary_macs + c.fp_macs) / 1e9:.2f}",
            f"{bits / 2**20:.2f} / {floats / 2**20:.2f}",
            f"{packed_file / 2**20:.2f} / {float_file / 2**20:.2f}",
            *(f"{v:.0f}" for v in ms)], packed


def quality_table(model_path: str, data: Path, sets: list[str], steps: list[int]) -> str:
    """PSNR / SSIM-Y and seconds per image of the model at each sampling-step count, and
    bicubic's."""
    model, bicubic = load_model(model_path), load_model(BICUBIC)
    with torch.inference_mode():  # first use loads the XNOR kernel: not timed per image
        model(torch.rand(1, 3, 16, 16))
    lines = ["| set | model | sampling steps | PSNR-Y | SSIM-Y | s / image |", "|" + " --- |" * 6]
    for name in sets:
        runs = [(BICUBIC, bicubic, None)] + [(Path(model_path).stem, model, n) for n in steps]
        for label, net, n in runs:
            result, _ = evaluate_set(net, data, name, UpscaleOptions(sampling_steps=n))
            lines.append(f"| {name} | {label} | {n or ''} | {result.psnr:.2f} | "
                         f"{result.ssim:.4f} | {result.seconds:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", type=int, default=64, help="UNet input side for latency")
    parser.add_argument("--repeats", type=int, default=3, help="UNet evaluations timed")
    parser.add_argument("--layer-repeats", type=int, default=51, help="calls timed per layer")
    parser.add_argument("--model", help="a trained BI-DiffSR file for the quality table")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "bench")
    parser.add_argument("--sets", default="Set5")
    parser.add_argument("--sampling-steps", default="50,20,10")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bidiffsr.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = [f"# BI-DiffSR, {args.threads} threads"]
    if args.model:
        steps = [int(n) for n in args.sampling_steps.split(",")]
        parts += [f"## Quality of `{args.model}` (seed 0)",
                  quality_table(args.model, args.data, args.sets.split(","), steps)]
    header = ["config", "params M", "FP twin M", "OPs G", "FP twin G",
              "binary layers MiB packed / fp32", "file MiB packed / fp32",
              *(f"UNet ms, {p} ({args.side}^2)" for p in ("simulated", "torch bitwise",
                                                          "kernel", "FP twin"))]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    layers = ["| config | binary conv | input layout | simulated ms | torch bitwise ms | kernel ms "
              "| FP twin ms | kernel vs simulated | kernel vs twin |", "|" + " --- |" * 9]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("paper", "x4"):
            _, _, recipe = load_recipe(ROOT / "configs" / "bidiffsr" / f"{name}.toml")
            torch.manual_seed(0)
            model = BIDiffSR(recipe.model).eval()
            cells, packed = row(name, model, Path(tmp), args.side, args.repeats)
            lines.append("| " + " | ".join(cells) + " |")
            layers += layer_rows(name, packed, args.side, args.layer_repeats)
    parts += ["## Cost; OPs are multiply-adds at 256x256", "\n".join(lines),
              f"## Binary layers alone ({args.threads} threads, median of {args.layer_repeats} "
              "calls; each input in the memory layout the UNet gives it)",
              "\n".join(layers)]
    text = "\n\n".join(parts) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
