"""What every exported file shares, whichever runtime runs it (ONNX Runtime, ExecuTorch): the
example inputs and dynamic shapes a model's per-tile graph is traced with, the metadata that
makes the file self-describing, the calibration feeds for int8, and ``ExportedUpscaler``, which
runs such a file with the PyTorch model's tiling and noise (``upscaler.upscale_tensor``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DeployError
from ..upscaler import TileFn, TileGraph, Upscaler

DTYPES = ("fp32", "int8")


def example_inputs(graph: TileGraph, tile: int, multiple: int = 1, one_tile: bool = False,
                   sides: tuple[int, int] = (8, 0)) -> tuple[tuple[Tensor, ...], list[str], tuple]:
    """(example inputs, their names, torch.export dynamic shapes) of ``graph`` at ``tile`` LR
    px: lr [B, 3, h, w], then prior_noise [B, D] and / or noise [B, k, r h, r w]; batch, h and
    w dynamic unless the graph has a static side (then the batch only) or ``one_tile`` (B = 1),
    the sides multiples of ``multiple`` (the model's ``multiple_of``) within ``sides`` (min,
    max; max 0: unbounded)."""
    batch, batch_dim = 1, None if one_tile else torch.export.Dim("batch", max=1024)
    h, w = (_side_dim(name, multiple, *sides) for name in ("h", "w"))
    side = graph.static_side or tile
    example = [torch.rand(batch, 3, side, side)]
    names, shapes = ["lr"], [{0: batch_dim} if graph.static_side else
                             {0: batch_dim, 2: h, 3: w}]
    if graph.prior_noise:
        example.append(torch.randn(batch, graph.prior_noise))
        names.append("prior_noise")
        shapes.append({0: batch_dim})
    k, r = graph.image_noise
    if k:
        example.append(torch.randn(batch, k, r * side, r * side))
        names.append("noise")
        shapes.append({0: batch_dim} if graph.static_side else
                      {0: batch_dim, 2: r * h, 3: r * w})
    return tuple(example), names, tuple(shapes)


def _side_dim(name: str, multiple: int, low: int, high: int):
    """A dynamic side in [low, high] (high 0: unbounded), ``multiple`` * an integer."""
    bound = {"max": high // multiple} if high else {}
    if multiple == 1:
        return torch.export.Dim(name, min=low, **bound)
    return multiple * torch.export.Dim(f"{name}_blocks", min=-(-low // multiple), **bound)


def metadata(model: Upscaler, graph: TileGraph, file_format: str, dtype: str,
             provenance: dict) -> dict[str, str]:
    """What ``ExportedUpscaler`` needs to run the file as the model ran, as strings."""
    k, r = graph.image_noise
    return {"format": file_format, "method": model.method, "scale": str(model.scale),
            "tile_overlap": str(model.tile_overlap), "multiple_of": str(model.multiple_of),
            "minimum": str(model.minimum), "max_tile": str(model.max_tile),
            "sampling_steps": str(model.default_sampling_steps),
            "bytes_per_lr_pixel": str(model.bytes_per_lr_pixel),
            "prior_noise": str(graph.prior_noise), "image_noise": f"{k},{r}",
            "static_side": str(graph.static_side), "dtype": dtype,
            "provenance": json.dumps(provenance)}


def calibration_feeds(graph: TileGraph, calibration: list[Tensor], multiple: int
                      ) -> Iterator[dict[str, Tensor]]:
    """Inputs by name for int8 calibration: each LR crop [1, 3, h, w] of a training image
    (resized to the graph's static side where it has one, else cropped to sides the model's
    size rule allows: multiples of ``multiple``) with noise drawn from seed 0."""
    g = torch.Generator().manual_seed(0)
    k, r = graph.image_noise
    for lr in calibration:
        if graph.static_side:
            lr = F.interpolate(lr, size=(graph.static_side,) * 2, mode="area")
        else:
            h, w = (side // multiple * multiple for side in lr.shape[-2:])
            lr = lr[..., :h, :w]
        if lr.shape[-1] == 0 or lr.shape[-2] == 0:
            continue
        item = {"lr": lr}
        if graph.prior_noise:
            item["prior_noise"] = torch.randn(1, graph.prior_noise, generator=g)
        if k:
            item["noise"] = torch.randn((1, k, r * lr.shape[-2], r * lr.shape[-1]), generator=g)
        yield item


def tile_graph(model: Upscaler) -> TileGraph:
    try:
        return model.tile_graph()
    except NotImplementedError as e:
        raise DeployError(str(e)) from e


class ExportedUpscaler(Upscaler):
    """An exported file as an ``Upscaler``: the attributes tiling needs from its metadata, the
    noise drawn from the seed exactly as the PyTorch model draws it; subclasses run one batch
    of tiles (``run_tile``) in their runtime."""

    def __init__(self, path: Path, meta: dict[str, str], file_format: str):
        super().__init__()
        if meta.get("format") != file_format:
            raise DeployError(f"{path}: not a {file_format} file written by fastdiffsr export")
        self.path = path
        self.method, self.scale = meta["method"], int(meta["scale"])
        self.tile_overlap, self.max_tile = int(meta["tile_overlap"]), int(meta["max_tile"])
        self.multiple_of, self.minimum = int(meta["multiple_of"]), int(meta["minimum"])
        self.default_sampling_steps = int(meta["sampling_steps"])
        self.bytes_per_lr_pixel = float(meta["bytes_per_lr_pixel"])
        self.prior_noise = int(meta["prior_noise"])
        self.noise_channels, self.noise_ratio = map(int, meta["image_noise"].split(","))
        self.static_side = int(meta["static_side"])
        self.dtype = meta["dtype"]
        self.seeded = self.prior_noise > 0 or self.noise_channels > 0
        if self.static_side:  # every tile exactly that side: pad smaller images up to it
            self.minimum = max(self.minimum, self.static_side)
            self.max_tile = self.static_side

    def run_tile(self, inputs: dict[str, Tensor]) -> Tensor:
        """The file's graph on one batch: inputs by name (lr, prior_noise, noise) -> SR."""
        raise NotImplementedError

    def image_noise(self, lr: Tensor, seed: int = 0) -> Tensor | None:
        """The image's noise [1, k, r H, r W], drawn as the PyTorch model draws it."""
        if not self.noise_channels:
            return None
        g = torch.Generator().manual_seed(seed)
        h, w, r = lr.shape[-2], lr.shape[-1], self.noise_ratio
        return torch.randn((1, self.noise_channels, r * h, r * w), generator=g)

    def prepare(self, lr: Tensor, sampling_steps: int | None = None, seed: int = 0) -> TileFn:
        """z_T for the whole image, drawn as the PyTorch model's ``prepare`` draws it; the
        sampling steps are the ones the file was exported with."""
        del lr
        if sampling_steps not in (None, self.default_sampling_steps):
            raise DeployError(f"{self.path} runs {self.default_sampling_steps} sampling "
                              f"step(s), fixed at export; got {sampling_steps}")
        z_T = None
        if self.prior_noise:
            g = torch.Generator().manual_seed(seed)
            z_T = torch.randn((1, self.prior_noise), generator=g)

        def run(tile: Tensor, noise: Tensor | None = None) -> Tensor:
            if self.static_side and tuple(tile.shape[-2:]) != (self.static_side,) * 2:
                raise DeployError(f"{self.path} runs {self.static_side} px tiles only "
                                  f"(--tile {self.static_side}), got {list(tile.shape[-2:])}")
            inputs = {"lr": tile.float().cpu()}
            if z_T is not None:
                inputs["prior_noise"] = z_T.expand(tile.shape[0], -1)
            if noise is not None:
                inputs["noise"] = noise.float().cpu()
            return self.run_tile(inputs).to(tile.device)

        return run
