"""Training and evaluation data.

``HRPatches`` is indexed by a global sample number: sample i is a pure function of (seed, i)
(image, crop, flip, rotation), so a run resumed at iteration k, or split over N DDP ranks, sees
exactly the samples an uninterrupted single-process run sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..imageio import is_image_file, picture_to_tensor, read_image
from ..resize import imresize
from .degradations import NAMED


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root``, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


def split_holdout(files: list[Path], holdout: int) -> tuple[list[Path], list[Path]]:
    """Every (len/holdout)-th file goes to validation: a fixed, spread-out held-out subset."""
    if holdout <= 0:
        return files, []
    step = max(1, len(files) // holdout)
    val = files[::step][:holdout]
    return [f for f in files if f not in val], val


def load_rgb_uint8(path: Path) -> np.ndarray:
    """H x W x 3 uint8 (gray is replicated), for compact in-memory training sets."""
    pic = read_image(path)
    px = np.round(pic.pixels * 255).astype(np.uint8)
    return np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px


def downscale(hr: Tensor, scale: int) -> Tensor:
    """LR as the benchmarks make it: MATLAB bicubic 1/scale with 8-bit rounding per pass."""
    return imresize(hr, 1 / scale, uint8_passes=True)


DEGRADATIONS = ("bicubic", *NAMED)  # what a training stage may make its LR by


def make_lr(hr: Tensor, scale: int, degradation: str, seed: int) -> Tensor:
    """LR [1, 3, H/s, W/s] of HR [1, 3, H, W]: ``bicubic`` (the benchmarks' clean downscale)
    or one of ``degradations.NAMED`` drawn with ``seed`` (realesrgan-severe: Real-ESRGAN's
    training distribution, a new draw per seed)."""
    if degradation == "bicubic":
        return downscale(hr, scale)
    return NAMED[degradation](hr, scale, seed)


@dataclass(frozen=True)
class PatchSpec:
    lr_patch: int  # LR crop side; the HR crop is lr_patch * scale
    scale: int
    seed: int
    degradation: str = "bicubic"  # how the LR is made (``make_lr``)


class HRPatches(Dataset):
    """Sample i -> (lr [3, p, p], hr [3, ps, ps]) from a random crop, flip and 90-degree turn."""

    def __init__(self, files: list[Path], spec: PatchSpec):
        hr_patch = spec.lr_patch * spec.scale
        images = [load_rgb_uint8(f) for f in files]
        keep = [i for i, im in enumerate(images) if min(im.shape[:2]) >= hr_patch]
        if not keep:
            raise ValueError(f"no training image is at least {hr_patch} px on each side")
        self.files = [files[i] for i in keep]  # smaller images cannot hold a patch: skipped
        self.images = [images[i] for i in keep]
        self.skipped = len(files) - len(keep)
        self.spec = spec

    def __len__(self) -> int:
        return 2**62  # indexed by global sample number; the sampler decides which

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        sample_seed = self.spec.seed * 1_000_003 + i
        g = torch.Generator().manual_seed(sample_seed)
        img = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        hp = self.spec.lr_patch * self.spec.scale
        s = self.spec.scale
        # crop on the scale grid so the LR pixel grid matches a full-image downscale
        y = int(torch.randint((img.shape[0] - hp) // s + 1, (1,), generator=g)) * s
        x = int(torch.randint((img.shape[1] - hp) // s + 1, (1,), generator=g)) * s
        hr = torch.from_numpy(np.ascontiguousarray(img[y : y + hp, x : x + hp]))
        hr = hr.permute(2, 0, 1).float() / 255
        flip, turns = torch.randint(2, (2,), generator=g).tolist()[0], int(
            torch.randint(4, (1,), generator=g)
        )
        if flip:
            hr = hr.flip(-1)
        hr = torch.rot90(hr, turns, dims=(-2, -1)).contiguous()
        return make_lr(hr[None], s, self.spec.degradation, sample_seed)[0], hr


class IterationSampler(Sampler[int]):
    """Global sample numbers for training iterations [start, end) of rank ``rank`` of ``world``.

    Iteration k uses samples k*B*world ... (k+1)*B*world - 1; rank r takes its contiguous B of
    them, so 2 ranks at batch B see the same samples as 1 rank at batch 2B.
    """

    def __init__(self, start: int, end: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.end, self.batch, self.rank, self.world = start, end, batch, rank, world

    def __iter__(self):
        for k in range(self.start, self.end):
            base = (k * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.end - self.start) * self.batch


def load_pair(hr_path: Path, lr_path: Path | None, scale: int, degradation: str = "bicubic",
              seed: int = 0) -> tuple[Tensor, Tensor]:
    """(lr [1,3,h,w], hr [1,3,sh,sw]); without ``lr_path`` the LR is made from the HR by
    ``make_lr(hr, scale, degradation, seed)``."""
    hr = picture_to_tensor(read_image(hr_path).pixels)
    if hr.shape[1] == 1:
        hr = hr.expand(-1, 3, -1, -1)
    h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
    hr = hr[..., :h, :w]
    if lr_path is None:
        return make_lr(hr, scale, degradation, seed), hr
    lr = picture_to_tensor(read_image(lr_path).pixels)
    return (lr.expand(-1, 3, -1, -1) if lr.shape[1] == 1 else lr), hr


def benchmark_pairs(root: Path, name: str, scale: int) -> list[tuple[Path, Path | None]]:
    """(HR, LR-or-None) files of a benchmark set laid out as ``<name>/HR`` and ``<name>/LRx<s>``."""
    hr_dir, lr_dir = root / name / "HR", root / name / f"LRx{scale}"
    hrs = list_images(hr_dir)
    if not lr_dir.is_dir():
        return [(h, None) for h in hrs]
    return [(h, lr_dir / h.name) for h in hrs]


def calibration_crops(root: str | Path, side: int, scale: int, count: int = 16) -> list[Tensor]:
    """``count`` LR crops [1, 3, h, h] for int8 calibration, h = ``side`` or what the image
    holds: the centre HR crop of h * scale px of evenly spaced images of a training folder,
    downscaled as the benchmarks' LR."""
    files = list_images(root)
    crops = []
    for f in files[:: max(1, len(files) // count)][:count]:
        img = load_rgb_uint8(f)
        hp = min(side, min(img.shape[:2]) // scale) * scale
        y, x = (img.shape[0] - hp) // 2, (img.shape[1] - hp) // 2
        hr = torch.from_numpy(np.ascontiguousarray(img[y : y + hp, x : x + hp]))
        crops.append(downscale(hr.permute(2, 0, 1)[None].float() / 255, scale))
    return crops
