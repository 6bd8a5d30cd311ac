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
the image is one tile, which the default tile size gives up to about 1500 x 1500 LR pixels.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DeployError
from ..upscaler import TileFn, TileGraph, Upscaler

FORMAT = "fastdiffsr-onnx"
DTYPES = ("fp32", "int8")
_INSTALL = "ONNX export and .onnx models need the deploy extra: pip install 'fastdiffsr[deploy]'"



def _require():
    """(onnx, onnxruntime), or DeployError with the one line saying what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise DeployError(_INSTALL) from e
    return onnx, onnxruntime


def _metadata(model: Upscaler, graph: TileGraph, dtype: str, provenance: dict
              ) -> dict[str, str]:
    k, r = graph.image_noise
    return {"format": FORMAT, "method": model.method, "scale": str(model.scale),
            "tile_overlap": str(model.tile_overlap), "multiple_of": str(model.multiple_of),
            "minimum": str(model.minimum), "max_tile": str(model.max_tile),
            "sampling_steps": str(model.default_sampling_steps),
            "bytes_per_lr_pixel": str(model.bytes_per_lr_pixel),
            "prior_noise": str(graph.prior_noise), "image_noise": f"{k},{r}",
            "static_side": str(graph.static_side), "dtype": dtype,
            "provenance": json.dumps(provenance)}


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
    try:
        graph = model.tile_graph()
    except NotImplementedError as e:
        raise DeployError(str(e)) from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", max=1024)
    h, w = torch.export.Dim("h", min=8), torch.export.Dim("w", min=8)
    side = graph.static_side or tile
    example = [torch.rand(1, 3, side, side)]
    names, shapes = ["lr"], [{0: batch} if graph.static_side else {0: batch, 2: h, 3: w}]
    if graph.prior_noise:
        example.append(torch.randn(1, graph.prior_noise))
        names.append("prior_noise")
        shapes.append({0: batch})
    k, r = graph.image_noise
    if k:
        example.append(torch.randn(1, k, r * side, r * side))
        names.append("noise")
        shapes.append({0: batch} if graph.static_side else {0: batch, 2: r * h, 3: r * w})
    if graph.static_side and calibration:
        calibration = [F.interpolate(c, size=(side, side), mode="area") for c in calibration]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with torch.no_grad():
            torch.onnx.export(graph.module.eval(), tuple(example), fp32, input_names=names,
                              output_names=["sr"], dynamic_shapes=tuple(shapes), dynamo=True,
                              external_data=False, verbose=False)
        if dtype == "int8":
            fp32 = _quantize(fp32, Path(tmp), graph, calibration)
        proto = onnx.load(str(fp32))
    meta = _metadata(model, graph, dtype, provenance or {})
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def _quantize(fp32: Path, folder: Path, graph: TileGraph, calibration: list[Tensor]) -> Path:
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

    def feeds() -> Iterator[dict]:
        g = torch.Generator().manual_seed(0)
        k, r = graph.image_noise
        for lr in calibration:
            item = {"lr": lr.numpy()}
            if graph.prior_noise:
                item["prior_noise"] = torch.randn(1, graph.prior_noise, generator=g).numpy()
            if k:
                shape = (1, k, r * lr.shape[-2], r * lr.shape[-1])
                item["noise"] = torch.randn(shape, generator=g).numpy()
            yield item

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = feeds()

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


class OnnxUpscaler(Upscaler):
    """An exported file run by ONNX Runtime on the CPU, with the PyTorch model's tiling and
    noise (``upscaler.upscale_tensor``); ``threads`` sets ONNX Runtime's intra-op threads."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        _, ort = _require()
        path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:  # the file is parsed once, by ONNX Runtime, which also gives its metadata
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises several types for broken files
            raise DeployError(f"{path}: not a readable ONNX file ({e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise DeployError(f"{path}: not an ONNX file written by fastdiffsr export")
        self.path = path
        self.method, self.scale = meta["method"], int(meta["scale"])
        self.tile_overlap, self.max_tile = int(meta["tile_overlap"]), int(meta["max_tile"])
        self.multiple_of, self.minimum = int(meta["multiple_of"]), int(meta["minimum"])
        self.default_sampling_steps = int(meta["sampling_steps"])
        self.bytes_per_lr_pixel = float(meta["bytes_per_lr_pixel"])
        self.prior_noise = int(meta["prior_noise"])
        self.noise_channels, self.noise_ratio = map(int, meta["image_noise"].split(","))
        self.static_side = int(meta["static_side"])
        self.seeded = self.prior_noise > 0 or self.noise_channels > 0
        if self.static_side:  # every tile exactly that side: pad smaller images up to it
            self.minimum = max(self.minimum, self.static_side)
            self.max_tile = self.static_side

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
            feeds = {"lr": tile.float().cpu().numpy()}
            if z_T is not None:
                feeds["prior_noise"] = z_T.expand(tile.shape[0], -1).numpy()
            if noise is not None:
                feeds["noise"] = noise.float().cpu().numpy()
            out = self.session.run(["sr"], feeds)[0]
            return torch.from_numpy(out).to(tile.device)

        return run
