"""ExecuTorch programs for edge devices (``pip install fastdiffsr[edge]``: ExecuTorch 1.5.1,
the release built against this project's torch 2.13.0).

``export_pte`` writes a model's per-tile evaluation (``Upscaler.tile_graph``) as a ``.pte``
program: ``torch.export`` with dynamic batch, height and width, lowered to the XNNPACK
delegate (ARM and x86 CPUs: what runs on a phone's CPU cores), the metadata stored as constant
methods (``format``, ``scale``, ...: the file describes itself to any ExecuTorch runtime).
``dtype="int8"``: XNNPACK's quantizer through PT2E on the convolutions (per-channel symmetric
int8 weights, int8 activations), calibrated on LR crops of training images, never a benchmark set.

``PteUpscaler`` runs such a program through ExecuTorch's Python runtime with the PyTorch model's
tiling and noise; on a device the same file runs under ExecuTorch's C++ runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from ..errors import DeployError
from ..upscaler import Upscaler
from .exported import (
    DTYPES,
    ExportedUpscaler,
    calibration_feeds,
    example_inputs,
    metadata,
    tile_graph,
)

FORMAT = "fastdiffsr-pte"
# XNNPACK plans its buffers for bounded shapes: tiles of 16 LR px up to the model's max_tile
# (at most 2048; the upscaler pads a smaller image up to 16 and tiles a larger one; planning for
# 2048 px tiles of a model with attention asks for more memory than there is), one per call (a
# dynamic batch fails in the portable kernels the graph keeps outside the delegate: aten::full
# cannot resize its output)
SIDES = (16, 2048)
_INSTALL = ("ExecuTorch export and .pte models need the edge extra: "
            "pip install 'fastdiffsr[edge]'")


def _require() -> None:
    try:
        import executorch  # noqa: F401
    except ImportError as e:
        raise DeployError(_INSTALL) from e


def export_pte(model: Upscaler, path: str | Path, tile: int = 128, dtype: str = "fp32",
               provenance: dict | None = None, calibration: list[Tensor] | None = None) -> Path:
    """Write ``model``'s per-tile graph to ``path`` as an ExecuTorch program (XNNPACK), traced
    at ``tile`` x ``tile`` LR px; ``int8`` needs ``calibration`` (LR crops of training images)."""
    _require()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "int8" and not calibration:
        raise ValueError("int8 export needs calibration images")
    graph = tile_graph(model)
    sides = (SIDES[0], min(model.max_tile or SIDES[1], SIDES[1]))
    example, names, shapes = example_inputs(graph, min(tile, sides[1]), model.multiple_of,
                                            one_tile=True, sides=sides)
    with torch.no_grad():
        program = torch.export.export(graph.module.eval(), example, dynamic_shapes=shapes)
        if dtype == "int8":
            program = _quantize(program, example, shapes, names, graph, calibration,
                                 model.multiple_of)
        meta = metadata(model, graph, FORMAT, dtype, provenance or {})
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                              constant_methods=meta)
        buffer = lowered.to_executorch().buffer
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer)
    return path


def _quantize(program, example, shapes, names, graph, calibration, multiple):
    """PT2E static quantization for XNNPACK: observers on the exported module, the calibration
    crops through it, then int8 (per-channel weights). Only the convolutions (and their fused
    ReLU) are quantized, as the ONNX Runtime int8 path does: a quantized add would round the
    output image's residual sum to 8 bits before the final 8-bit rounding."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_operator_type(
        torch.ops.aten.conv2d.default, get_symmetric_quantization_config(is_per_channel=True))
    observed = prepare_pt2e(program.module(), quantizer)
    for feeds in calibration_feeds(graph, calibration, multiple):
        observed(*(feeds[name] for name in names))
    return torch.export.export(convert_pt2e(observed), example, dynamic_shapes=shapes)


class PteUpscaler(ExportedUpscaler):
    """A ``.pte`` program run by ExecuTorch's Python runtime (XNNPACK on the CPU)."""

    def __init__(self, path: str | Path):
        _require()
        from executorch.runtime import Runtime

        path = Path(path)
        try:
            program = Runtime.get().load_program(path)
            keys = sorted(program.method_names - {"forward"})
            meta = {k: program.load_method(k).execute([])[0] for k in keys}
            forward = program.load_method("forward")
        except Exception as e:  # the runtime raises RuntimeError / ValueError for bad files
            raise DeployError(f"{path}: not a readable ExecuTorch program ({e})") from e
        super().__init__(path, {k: str(v) for k, v in meta.items()}, FORMAT)
        if not self.static_side:
            self.minimum = max(self.minimum, SIDES[0])
            self.max_tile = min(self.max_tile or SIDES[1], SIDES[1])
        self.names = ["lr"] + (["prior_noise"] if self.prior_noise else []) + (
            ["noise"] if self.noise_channels else [])
        self.program, self.forward_method = program, forward
        self.provenance = json.loads(meta["provenance"])

    def run_tile(self, inputs: dict[str, Tensor]) -> Tensor:
        """The program runs one tile per call: a batch is run tile by tile."""
        if max(inputs["lr"].shape[-2:]) > self.max_tile:
            raise DeployError(f"{self.path} runs LR tiles of at most {self.max_tile} px "
                              f"(--tile {self.max_tile}), got {list(inputs['lr'].shape[-2:])}")
        tiles = [[inputs[n][i : i + 1].contiguous() for n in self.names]
                 for i in range(inputs["lr"].shape[0])]
        return torch.cat([self.forward_method.execute(tile)[0] for tile in tiles])
