"""The contract every loadable model follows (DESIGN.md, "Upscaler")."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

TileFn = Callable[[Tensor], Tensor]


class Upscaler(nn.Module):
    """``forward(lr [B,3,h,w] in [0,1]) -> [B,3,h*s,w*s]`` plus the metadata tiling needs.

    ``prepare(lr_full)`` does the per-image work once (e.g. RDSR's prior vector, a diffusion
    model's seeded noise) and returns the function applied to each tile of that image.
    """

    method: str = ""
    scale: int = 1
    multiple_of: int = 1  # input sides must be multiples of this
    minimum: int = 1  # smallest input side
    tile_overlap: int = 16  # LR pixels of overlap tiles need to be seamless
    max_tile: int = 0  # largest LR tile side to run by default (e.g. attention); 0: no limit
    default_steps: int = 0  # diffusion steps at inference (0: not a diffusion sampler)
    bf16_safe: bool = False
    bytes_per_lr_pixel: float = 0.0  # activation memory per LR pixel; 0: unknown (no auto tiles)

    def prepare(self, lr: Tensor, steps: int | None = None, seed: int = 0) -> TileFn:
        """Per-image set-up on the whole LR image [1,3,H,W]; returns the per-tile function."""
        del lr, steps, seed
        return self.forward

    def tile_noise(self, lr: Tensor, seed: int = 0) -> Tensor | None:
        """Noise every tile of one image must share, at LR resolution [1, k, H, W], or None.

        The tiler crops it together with the LR, so ``prepare``'s function then receives
        cat(LR tile, noise tile) [B, 3 + k, th, tw].
        """
        del lr, seed
        return None

    def fuse(self) -> None:
        """Convert to the deployment form in place (reparameterisation); a no-op by default."""

    def info(self) -> dict[str, object]:
        """Metadata a user or a tiler needs (spandrel-style)."""
        return {
            "method": self.method,
            "scale": self.scale,
            "multiple_of": self.multiple_of,
            "minimum": self.minimum,
            "tile_overlap": self.tile_overlap,
            "max_tile": self.max_tile,
            "default_steps": self.default_steps,
            "bf16_safe": self.bf16_safe,
            "params": count_params(self),
        }


def model_device(module: nn.Module) -> torch.device:
    """Where a model's weights live (CPU for weightless models such as bicubic)."""
    return next(iter(module.parameters()), torch.empty(0)).device


def count_params(module: nn.Module) -> int:
    """Number of parameters (weights that a model file stores)."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def measure_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call counted by ``torch.utils.flop_counter`` (2 per multiply-add).

    Attention runs with SDPA's math backend, whose matmuls the counter sees (it has no formula
    for the fused CPU kernel and would count attention as 0).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel([SDPBackend.MATH]):
        fn()
    return counter.get_total_flops()
