"""ONNX export and the ONNX Runtime backend (``pip install fastdiffsr[deploy]``).

``export_onnx`` writes a model's per-tile evaluation (``Upscaler.tile_graph``) as one ONNX graph
with dynamic batch, height and width, through ``torch.onnx.export`` (the dynamo exporter), and
stores what the tiler needs as metadata properties (format, method, scale, tile overlap, size
rules, sampling steps, the prior noise's size, dtype, provenance), so the file is
self-describing. ``dtype="int8"`` then quantizes its convolutions with ONNX Runtime's static
post-training quantization (QDQ, per-channel int8 weights, uint8 activations; the output layer
stays float), calibrated on LR crops of training images (never a benchmark set).

``OnnxUpscaler`` runs such a file as an ``Upscaler``: ``upscaler.upscale_tensor`` pads, tiles and
blends as for a PyTorch model, and the per-image noise is drawn from the seed exactly as the
PyTorch model draws it. One difference: an exported RDSR estimates its prior vector per tile
(the graph is one tile's evaluation), the PyTorch model once per image; outputs agree whenever
the image is one tile, which the default tile size gives up to 256 x 256 LR pixels (tile 0:
any size).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import Tensor

from ..errors import DeployError
from ..upscaler import TileGraph, Upscaler
from .exported import (
    DTYPES,
    ExportedUpscaler,
    calibration_feeds,
    example_inputs,
    metadata,
    tile_graph,
)

FORMAT = "fastdiffsr-onnx"
_INSTALL = "ONNX export and .onnx models need the deploy extra: pip install 'fastdiffsr[deploy]'"



def _require():
    """(onnx, onnxruntime), or DeployError with the one line saying what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise DeployError(_INSTALL) from e
    return onnx, onnxruntime


def export_onnx(model: Upscaler, path: str | Path, tile: int = 128, dtype: str = "fp32",
                provenance: dict | None = None, calibration: list[Tensor] | None = None) -> Path:
    """Write ``model``'s per-tile graph to ``path``, traced at ``tile`` x ``tile`` LR px (a
    graph with a ``static_side`` at that side); ``int8`` needs ``calibration``: LR crops
    [1, 3, h, w] of training images (resized to the static side where the graph has one)."""
    onnx, _ = _require()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "int8" and not calibration:
        raise ValueError("int8 export needs calibration images")
    graph = tile_graph(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example, names, shapes = example_inputs(graph, tile, model.multiple_of)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with torch.no_grad():
            torch.onnx.export(graph.module.eval(), example, fp32, input_names=names,
                              output_names=["sr"], dynamic_shapes=tuple(shapes), dynamo=True,
                              external_data=False, verbose=False)
        if dtype == "int8":
            fp32 = _quantize(fp32, Path(tmp), graph, calibration, model.multiple_of)
        proto = onnx.load(str(fp32))
    meta = metadata(model, graph, FORMAT, dtype, provenance or {})
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def _quantize(fp32: Path, folder: Path, graph: TileGraph, calibration: list[Tensor],
              multiple: int) -> Path:
    """Static QDQ quantization of ``fp32``'s convolutions (per-channel int8 weights, uint8
    activations), all but the last (the output layer), which stays float with the other ops:
    on rdsr-x4's Set5 quantizing every op cost 0.16 dB, the convolutions alone 0.10, all but
    the output layer 0.09 (measured 2026-12-04)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = ({k: v.numpy() for k, v in item.items()}
                          for item in calibration_feeds(graph, calibration, multiple))

        def get_next(self) -> dict | None:
            return next(self.items, None)

    import onnx

    pre, int8 = folder / "pre.onnx", folder / "int8.onnx"
    # ONNX Runtime's symbolic shape inference gives up on the latent models' attention graph
    # ("Incomplete symbolic shape inference"); ONNX's own shape inference suffices here
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
    quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                    nodes_to_exclude=convs[-1:])
    return int8


class OnnxUpscaler(ExportedUpscaler):
    """An exported file run by ONNX Runtime on the CPU, with the PyTorch model's tiling and
    noise; ``threads`` sets ONNX Runtime's intra-op threads."""

    def __init__(self, path: str | Path, threads: int | None = None):
        _, ort = _require()
        path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # ONNX Runtime's pool spins between runs by default; beside torch's own threads (the
        # tiler's work between tiles) on few cores that made rdsr-x4 int8 at 128->512 take
        # 22 or 44 ms from call to call, and 22 ms every call without it (2 threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:  # the file is parsed once, by ONNX Runtime, which also gives its metadata
            session = ort.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises several types for broken files
            raise DeployError(f"{path}: not a readable ONNX file ({e})") from e
        super().__init__(path, session.get_modelmeta().custom_metadata_map, FORMAT)
        self.session = session

    def run_tile(self, inputs: dict[str, Tensor]) -> Tensor:
        out = self.session.run(["sr"], {k: v.numpy() for k, v in inputs.items()})[0]
        return torch.from_numpy(out)
