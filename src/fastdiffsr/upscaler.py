"""The contract every loadable model follows (DESIGN.md, "Upscaler") and the one inference path.

``upscale_rows`` (and ``upscale_tensor``, its rows assembled) is the only place that pads an
image to the model's requirements, draws the image's noise once, chooses the tile size, tiles,
blends and crops; the CLI, the Python API, evaluation, benchmarks, training validation and the
ablation scripts all call it, and so does ``Upscaler.forward`` (whole images, one tile).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import NonFiniteOutputError, OptionError
from .tiling import (
    Canvas,
    Sink,
    TileFn,
    auto_tile_size,
    pad_to_requirements,
    tile_starts,
    tiled_apply,
)

MAX_TILES = 4096  # tiles per image: beyond this a plan is a mistake (a tiny --tile), not a job

# a model's TileFn: (LR tile [B, 3, th, tw], its crop of the image noise [B, k, r th, r tw] when
# the model has image noise) -> SR tile [B, 3, s th, s tw]


class Upscaler(nn.Module):
    """``forward(lr [B,3,h,w] in [0,1]) -> [B,3,h*s,w*s]`` plus the metadata tiling needs.

    Subclasses give ``prepare`` (per-image work once, e.g. RDSR's prior vector; returns the
    per-tile function) and, for diffusion samplers, ``image_noise`` (the noise field the whole
    image shares, which the tiler crops beside the LR).
    """

    method: str = ""
    scale: int = 1
    multiple_of: int = 1  # input sides must be multiples of this
    minimum: int = 1  # smallest input side
    tile_overlap: int = 16  # LR pixels of overlap tiles need to be seamless
    max_tile: int = 0  # largest LR tile side to run by default (e.g. attention); 0: no limit
    default_sampling_steps: int = 0  # sampling steps at inference (0: not a diffusion sampler)
    seeded: bool = False  # the seed changes the output (a sampler's noise)
    bf16_safe: bool = False  # bf16 measured within 0.01 dB of fp32 on the benchmark sets
    bytes_per_lr_pixel: float = 0.0  # activation memory per LR pixel; 0: unknown (no auto tiles)

    def prepare(self, lr: Tensor, sampling_steps: int | None = None, seed: int = 0) -> TileFn:
        """Per-image set-up on the whole (padded) LR image [1,3,H,W]; returns the per-tile
        function. The default is the model's ``tile_forward``."""
        del lr, sampling_steps, seed
        return self.tile_forward

    def tile_forward(self, lr: Tensor) -> Tensor:
        """The per-tile function of a model with no per-image work."""
        raise NotImplementedError(f"{type(self).__name__} defines neither prepare nor tile_forward")

    def image_noise(self, lr: Tensor, seed: int = 0) -> Tensor | None:
        """Noise every tile of one image shares, drawn once for the whole (padded) LR image
        [1,3,H,W]: [1, k, r H, r W] on a grid r >= 1 times the LR's, or None (no noise)."""
        del lr, seed
        return None

    def forward(self, lr: Tensor) -> Tensor:
        """Whole images [B, 3, h, w], one tile each, seed 0, default sampling steps."""
        return torch.cat([upscale_tensor(self, x, WHOLE_IMAGE) for x in lr.split(1)])

    def fuse(self) -> None:
        """Convert to the deployment form in place (reparameterisation); a no-op by default."""

    def tile_graph(self) -> TileGraph:
        """The per-tile evaluation as one module for export (``backends.onnx``)."""
        raise NotImplementedError(f"models of method '{self.method}' cannot be exported yet")

    def info(self) -> dict[str, object]:
        """Metadata a user or a tiler needs (spandrel-style)."""
        return {
            "method": self.method,
            "scale": self.scale,
            "multiple_of": self.multiple_of,
            "minimum": self.minimum,
            "tile_overlap": self.tile_overlap,
            "max_tile": self.max_tile,
            "default_sampling_steps": self.default_sampling_steps,
            "seeded": self.seeded,
            "bf16_safe": self.bf16_safe,
            "params": count_params(self),
        }


@dataclass(frozen=True)
class TileGraph:
    """What an exported file runs per tile: ``module(lr [B, 3, h, w], *noise)``.

    ``prior_noise`` D > 0: the second input is z_T [B, D] ~ N(0, I), drawn once per image from
    the seed as the model's ``prepare`` draws it. ``image_noise`` (k, r), k > 0: the second
    input is the tile's crop [B, k, r h, r w] of the model's ``image_noise``. ``static_side``
    > 0: the graph runs tiles of exactly that side (e.g. a bicubic resize inside it whose
    matrices depend on the size); 0: any h and w."""

    module: nn.Module
    prior_noise: int = 0
    image_noise: tuple[int, int] = (0, 1)
    static_side: int = 0


class FixedSteps(nn.Module):
    """A diffusion model's per-tile evaluation for export, ``model.super_resolve(lr, noise,
    sampling_steps)`` at fixed sampling steps: (LR [B, 3, h, w], noise) -> SR [B, 3, sh, sw]."""

    def __init__(self, model: nn.Module, sampling_steps: int):
        super().__init__()
        self.model, self.sampling_steps = model, sampling_steps

    def forward(self, lr: Tensor, noise: Tensor) -> Tensor:
        return self.model.super_resolve(lr, noise, self.sampling_steps)


class Cancelled(Exception):
    """The ``progress`` callback returned False: the upscale stopped, nothing was returned."""


# progress(done_tiles, total_tiles) after each batch of tiles; returning False cancels
Progress = Callable[[int, int], bool | None]


@dataclass(frozen=True)
class UpscaleOptions:
    """How to upscale; every field is checked when the options are made (``OptionError``)."""

    outscale: float | None = None  # final scale in (0, 16]; None: the model's own
    tile: int | None = None  # LR tile side; 0: the whole image; None: from ``memory_budget``
    tile_overlap: int | None = None  # None: the model's own requirement
    batch_tiles: int = 4  # tiles per forward call
    sampling_steps: int | None = None  # None: the model's default
    seed: int = 0  # 0 .. 2^63 - 1
    memory_budget: int = 2 * 1024**3  # bytes of activations per forward call
    dtype: str = "fp32"  # "bf16": convolutions and matmuls in bfloat16 (torch.autocast)
    self_ensemble: bool = False  # x8 geometric self-ensemble per tile (8x the time)

    def __post_init__(self) -> None:
        checks = {  # name: (whether it is in range, the range in words)
            "outscale": (self.outscale is None or (_real(self.outscale)
                                                   and 0 < self.outscale <= 16),
                         "None or a number in (0, 16]"),
            "tile": (self.tile is None or (_int(self.tile) and self.tile >= 0),
                     "None or an int >= 0"),
            "tile_overlap": (self.tile_overlap is None or (_int(self.tile_overlap)
                                                           and self.tile_overlap >= 0),
                             "None or an int >= 0"),
            "batch_tiles": (_int(self.batch_tiles) and self.batch_tiles >= 1, "an int >= 1"),
            "sampling_steps": (self.sampling_steps is None or (_int(self.sampling_steps)
                                                               and self.sampling_steps >= 1),
                               "None or an int >= 1"),
            "seed": (_int(self.seed) and 0 <= self.seed < 2**63, "an int in [0, 2^63)"),
            "memory_budget": (_int(self.memory_budget) and self.memory_budget > 0,
                              "an int > 0 (bytes)"),
            "dtype": (self.dtype in ("fp32", "bf16"), "'fp32' or 'bf16'"),
            "self_ensemble": (isinstance(self.self_ensemble, bool), "True or False"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise OptionError(f"option {name} must be {allowed}, "
                                  f"got {getattr(self, name)!r}")

    @classmethod
    def of(cls, **options) -> UpscaleOptions:
        """The options from keyword arguments; an unknown name is an ``OptionError`` that
        lists the valid ones (and the closest)."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise OptionError(f"unknown option {key!r}{hint}; options: {', '.join(names)}")
        return cls(**options)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


DEFAULTS = UpscaleOptions()
WHOLE_IMAGE = UpscaleOptions(tile=0)


def upscale_tensor(
    model: Upscaler, lr: Tensor, opts: UpscaleOptions = DEFAULTS,
    progress: Progress | None = None,
) -> Tensor:
    """[1, 3, H, W] in [0, 1] -> [1, 3, sH, sW] float32 (channels-last memory):
    ``upscale_rows`` assembled."""
    canvas = Canvas(lr.shape[-2] * model.scale)
    upscale_rows(model, lr, canvas, opts, progress)
    return canvas.out


def upscale_rows(
    model: Upscaler, lr: Tensor, sink: Sink, opts: UpscaleOptions = DEFAULTS,
    progress: Progress | None = None,
) -> None:
    """Upscale [1, 3, H, W] in [0, 1], giving the output to ``sink(first_row, rows [1, 3, n,
    sW] float32)`` top to bottom as the tiles finish (a band of one tile row is held, never
    the whole float output): pad, per-image preparation, the image's noise drawn once, tiles
    (the LR and the noise cropped alike), blend, crop. ``progress(done, total)`` follows the
    tiles; when it returns False the upscale stops with ``Cancelled``. Rows with NaN or
    infinite values stop it with ``NonFiniteOutputError`` (broken weights).

    Runs in inference mode: no autograd graph, whoever calls it. ``opts.dtype = "bf16"`` runs
    the model under ``torch.autocast`` in bfloat16 (the CPU's native bf16 path where it has
    one; measured per model in ``benchmarks/results/deploy.md``). ``opts.self_ensemble`` runs
    each tile through ``self_ensemble``.
    """
    h, w = lr.shape[-2:]
    x = pad_to_requirements(lr, model.multiple_of, model.minimum)
    overlap = model.tile_overlap if opts.tile_overlap is None else opts.tile_overlap
    tile = tile_size(model, x, opts)
    check_plan(x.shape[-2], x.shape[-1], tile, overlap, model.multiple_of)
    bf16 = torch.autocast(x.device.type, torch.bfloat16, enabled=opts.dtype == "bf16")
    with torch.inference_mode(), bf16:
        fn = model.prepare(x, opts.sampling_steps, opts.seed)
        fn = self_ensemble(fn) if opts.self_ensemble else fn
        noise = model.image_noise(x, opts.seed)
        inputs = [x] if noise is None else [x, noise]
        tiled_apply(fn, inputs, tile, overlap, model.scale,
                    batch_size=opts.batch_tiles, bytes_per_lr_pixel=model.bytes_per_lr_pixel,
                    memory_budget=opts.memory_budget, progress=_cancellable(progress),
                    sink=_cropped(sink, h * model.scale, w * model.scale, model.method))


def self_ensemble(fn: TileFn) -> TileFn:
    """The x8 geometric self-ensemble (Timofte et al. 2016; EDSR+, Lim et al. 2017): the
    mean of ``fn`` over the 8 flips and 90-degree rotations of its inputs (every input of the
    tile, the noise included, turned alike), each output turned back. Per tile, after the
    per-image preparation (RDSR's prior comes from the image as it is)."""

    def turned(x: Tensor, k: int, flip: bool) -> Tensor:
        return torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))

    def back(y: Tensor, k: int, flip: bool) -> Tensor:
        y = torch.rot90(y, -k, (-2, -1))
        return y.flip(-1) if flip else y

    def mean(*tiles: Tensor) -> Tensor:
        out = None
        for k in range(4):
            for flip in (False, True):
                y = back(fn(*(turned(t, k, flip) for t in tiles)), k, flip).float()
                out = y if out is None else out + y
        return out / 8

    return mean


def _cropped(sink: Sink, height: int, width: int, method: str) -> Sink:
    """The rows of the padded output inside ``height`` x ``width``, as float32, checked."""

    def take(top: int, rows: Tensor) -> None:
        if top >= height:
            return
        rows = rows[:, :, : height - top, :width].float()
        if not torch.isfinite(rows.sum()):  # one pass, no mask (values are ~[0, 1])
            raise NonFiniteOutputError(f"the {method} model produced NaN or infinite values "
                                       "(broken weights?): nothing is returned")
        sink(top, rows)

    return take


def _cancellable(progress: Progress | None) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        if progress(done, total) is False:
            raise Cancelled(f"cancelled by the progress callback after {done} of {total} tiles")

    return report


def tile_size(model: Upscaler, x: Tensor, opts: UpscaleOptions) -> int:
    """The LR tile side for the padded image ``x``: the user's (0: the whole image, as
    Real-ESRGAN's ``--tile 0``), else the largest that fits the memory budget
    (``tiling.auto_tile_size``), capped by the model's ``max_tile``."""
    h, w = x.shape[-2:]
    if opts.tile is not None:
        return opts.tile or max(h, w)
    auto = auto_tile_size(h, w, model.bytes_per_lr_pixel, opts.memory_budget, model.multiple_of)
    return min(auto, model.max_tile) if model.max_tile else auto


def tile_count(h: int, w: int, tile: int, overlap: int) -> int:
    """Tiles of side ``tile`` (overlap ``overlap``) that cover an h x w LR image."""
    return len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))


def check_plan(h: int, w: int, tile: int, overlap: int, multiple_of: int = 1) -> None:
    """Refuse a tile plan whose stride is under the overlap (tiles computed over and over:
    tile < 2 overlap) or that needs more than ``MAX_TILES`` tiles; the error names the
    smallest tile that works."""
    if tile >= max(h, w):
        return  # one tile: no overlap to blend
    fits = 2 * overlap <= tile and tile_count(h, w, tile, overlap) <= MAX_TILES
    if fits:
        return
    smallest = -(-max(2 * overlap, 1) // multiple_of) * multiple_of
    while smallest < max(h, w) and tile_count(h, w, smallest, overlap) > MAX_TILES:
        smallest += multiple_of
    raise OptionError(f"tile {tile} with overlap {overlap} on a {w}x{h} LR image "
                      + ("overlaps more than it advances" if 2 * overlap > tile else
                         f"needs {tile_count(h, w, tile, overlap):,} tiles (> {MAX_TILES})")
                      + f": use a tile of at least {smallest} (or 0 for the whole image)")


def model_device(module: nn.Module) -> torch.device:
    """Where a model's weights live (CPU for weightless models such as bicubic)."""
    return next(iter(module.parameters()), torch.empty(0)).device


def count_params(module: nn.Module) -> int:
    """Number of parameters (weights that a model file stores)."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def measure_flops(model: nn.Module, fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (running ``model``) counted by ``torch.utils.flop_counter``
    (2 per multiply-add).

    Attention runs with SDPA's math backend, whose matmuls the counter sees (it has no formula
    for the fused CPU kernel and would count attention as 0). Binary convolutions run as the
    float convolutions they equal (``nn.binary.float_path``), so they count as float
    multiply-adds; the compiled XNOR kernel would count as 0.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from .nn.binary import float_path

    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel([SDPBackend.MATH]), float_path(model):
        fn()
    return counter.get_total_flops()
