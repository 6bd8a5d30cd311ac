"""The bicubic baseline: MATLAB-compatible bicubic upscaling as an Upscaler with no weights."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..config import check_ranges
from ..resize import imresize
from ..upscaler import Upscaler


@dataclass(frozen=True)
class BicubicConfig:
    scale: int = 4

    def __post_init__(self) -> None:
        check_ranges(self, {"scale": (1, 16)})


class Bicubic(Upscaler):
    method = "bicubic"
    tile_overlap = 8  # the kernel reaches 2 LR px; tiling's guard band is overlap // 4
    # large images go through the tiler, whose blended output is the only full-size copy
    # (benchmarks/results/large_images.md); 512 px tiles overlap by 3%
    max_tile = 512

    def __init__(self, cfg: BicubicConfig):
        super().__init__()
        self.cfg = cfg
        self.scale = cfg.scale

    def tile_forward(self, lr: Tensor) -> Tensor:
        return imresize(lr, self.scale).clamp_(0, 1)


Config = BicubicConfig


def build(cfg: BicubicConfig) -> Bicubic:
    return Bicubic(cfg)
