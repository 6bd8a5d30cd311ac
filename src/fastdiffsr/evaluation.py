"""Benchmark evaluation: upscale the official LR (or one a named degradation makes from the HR),
PSNR/SSIM-Y with border crop, crops, report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data.datasets import benchmark_pairs, load_pair
from .imageio import Picture, tensor_to_pixels, write_image
from .metrics import psnr_y, quantize, ssim_y
from .resize import imresize
from .upscaler import (
    DEFAULTS,
    UpscaleOptions,
    Upscaler,
    count_params,
    measure_flops,
    model_device,
    upscale_tensor,
)


@dataclass(frozen=True)
class SetResult:
    name: str
    images: int
    psnr: float
    ssim: float
    seconds: float  # mean wall time per image
    per_image: dict[str, tuple[float, float]]  # file stem: (PSNR-Y, SSIM-Y)


def evaluate_set(
    model: Upscaler, root: Path, name: str, opts: UpscaleOptions = DEFAULTS,
    degradation: str | None = None, lr_out: Path | None = None,
) -> tuple[SetResult, np.ndarray]:
    """Scores of one set and a comparison strip (bicubic | model | GT) of its first image.

    ``degradation``: a name of ``data.degradations.NAMED``; the LR is made from the HR by it
    (seeded by the image's index in the set) instead of read, and written under ``lr_out``
    (``<lr_out>/<set>/LRx<s>-<degradation>/<file>.png``) when given, for others to reproduce."""
    device = model_device(model)
    psnrs, ssims, secs, per_image, strip = [], [], [], {}, None
    for index, (hr_path, lr_path) in enumerate(benchmark_pairs(root, name, model.scale)):
        lr, hr = (load_pair(hr_path, None, model.scale, degradation, index) if degradation
                  else load_pair(hr_path, lr_path, model.scale))
        if degradation and lr_out is not None:
            folder = lr_out / name / f"LRx{model.scale}-{degradation}"
            write_image(folder / f"{hr_path.stem}.png", Picture(tensor_to_pixels(lr)))
        lr, hr = lr.to(device), hr.to(device)
        t0 = time.perf_counter()
        sr = quantize(upscale_tensor(model, lr, opts))
        secs.append(time.perf_counter() - t0)
        psnrs.append(psnr_y(sr, hr, model.scale).item())
        ssims.append(ssim_y(sr, hr, model.scale).item())
        per_image[hr_path.stem] = (psnrs[-1], ssims[-1])
        if strip is None:
            strip = comparison_strip(lr, sr, hr, model.scale)
    result = SetResult(name, len(psnrs), float(np.mean(psnrs)), float(np.mean(ssims)),
                       float(np.mean(secs)), per_image)
    return result, strip


def comparison_strip(lr: Tensor, sr: Tensor, hr: Tensor, scale: int, crop: int = 128) -> np.ndarray:
    """H x 3W x 3 array: the same HR-resolution crop (the most detailed one) of bicubic, SR, GT."""
    bic = imresize(lr, scale).clamp(0, 1)
    y, x = busiest_crop(hr, crop)
    parts = [t[0, :, y : y + crop, x : x + crop] for t in (bic, sr, hr)]
    gap = torch.ones(3, parts[0].shape[1], 4, device=hr.device)
    row = torch.cat([parts[0], gap, parts[1], gap, parts[2]], dim=2)
    return row.permute(1, 2, 0).cpu().numpy()


def busiest_crop(hr: Tensor, crop: int) -> tuple[int, int]:
    """Top-left of the crop with the most gradient energy (on a coarse grid)."""
    h, w = hr.shape[-2:]
    crop = min(crop, h - 1, w - 1)
    if crop < 1:
        return 0, 0
    gray = hr.mean(1, keepdim=True)
    energy = (gray[..., 1:, :-1] - gray[..., :-1, :-1]).abs() + (
        gray[..., :-1, 1:] - gray[..., :-1, :-1]).abs()
    pooled = torch.nn.functional.avg_pool2d(energy, crop, stride=max(1, crop // 4))
    idx = int(pooled.flatten().argmax())
    cols = pooled.shape[-1]
    return (idx // cols) * max(1, crop // 4), (idx % cols) * max(1, crop // 4)


def model_cost(model: Upscaler, lr_side: int = 128, opts: UpscaleOptions = DEFAULTS) -> dict:
    """Params and FLOPs of upscaling one lr_side x lr_side image (FlopCounterMode: 2 per MAC)."""
    device = model_device(model)
    x = torch.rand(1, 3, lr_side, lr_side, device=device)
    return {"params": count_params(model),
            "flops": measure_flops(model, lambda: upscale_tensor(model, x, opts))}


def write_report(folder: Path, model_name: str, results: list[SetResult], cost: dict,
                 strips: dict[str, np.ndarray], settings: dict) -> Path:
    """report.md, results.json and one comparison PNG per set."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, strip in strips.items():
        write_image(folder / f"{name}_bicubic-model-gt.png", Picture(strip))
    (folder / "results.json").write_text(json.dumps(
        {"model": model_name, "settings": settings, "cost": cost,
         "sets": [asdict(r) for r in results]}, indent=2))
    lines = [f"# Evaluation of `{model_name}`", "",
             f"Settings: {json.dumps(settings)}. Protocol: the LR of the settings' degradation, "
             "8-bit output, Y (BT.601), "
             f"{settings['scale']} px border crop, SSIM 11x11 Gaussian (sigma 1.5).", "",
             format_table(results, cost), ""]
    lines += [f"![{n}]({n}_bicubic-model-gt.png) — {n}: bicubic | model | ground truth"
              for n in strips]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def format_table(results: list[SetResult], cost: dict) -> str:
    rows = ["| set | images | PSNR-Y (dB) | SSIM-Y | s / image | params | GFLOPs (128->512) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rows.append(f"| {r.name} | {r.images} | {r.psnr:.2f} | {r.ssim:.4f} | {r.seconds:.3f} | "
                    f"{cost['params']:,} | {cost['flops'] / 1e9:.2f} |")
    return "\n".join(rows)
