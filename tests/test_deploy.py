"""Deployment: ONNX export (fp32, int8), the ONNX Runtime backend through the same tiler and
noise as PyTorch, self-describing files, the CLI, and the one-line error without the extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiffsr import resize
from fastdiffsr.cli import main
from fastdiffsr.data.datasets import calibration_crops
from fastdiffsr.imageio import Picture, write_image
from fastdiffsr.methods.rdsr.model import RDSR, RDSRConfig
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor
from fastdiffsr.zoo import load_model, save_model

from .conftest import ROOT

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fastdiffsr.backends.onnx import DeployError, OnnxUpscaler, export_onnx  # noqa: E402

TINY = RDSRConfig(channels=8, blocks=2, prior_dim=8, lpe_channels=8, denoiser_width=16)


def small_rdsr() -> RDSR:
    """A small deployed RDSR with non-trivial FiLM layers (they are zero-initialised)."""
    torch.manual_seed(0)
    model = RDSR(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.fuse()
    return model.eval()


@pytest.fixture(scope="module")
def rdsr() -> RDSR:
    return small_rdsr()


@pytest.fixture(scope="module")
def fp32_file(rdsr, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(rdsr, path, tile=16, provenance={"note": "test"})


def test_fp32_file_equals_pytorch_through_the_same_path(rdsr, fp32_file) -> None:
    """Odd sizes, one tile (the prior is estimated per tile in the file, per image in
    PyTorch): within 1e-3 per pixel, for two seeds; a tile batch of 3 runs too."""
    ort = OnnxUpscaler(fp32_file)
    for shape, seed in (((1, 3, 13, 11), 0), ((1, 3, 20, 7), 5)):
        lr = torch.rand(shape)
        opts = UpscaleOptions(seed=seed)
        a, b = upscale_tensor(rdsr, lr, opts), upscale_tensor(ort, lr, opts)
        assert a.shape == b.shape == (1, 3, shape[2] * 4, shape[3] * 4)
        assert (a - b).abs().max() < 1e-3
    tiled = upscale_tensor(ort, torch.rand(1, 3, 40, 40), UpscaleOptions(tile=16, batch_tiles=3))
    assert tiled.shape == (1, 3, 160, 160)


def test_file_is_self_describing(fp32_file) -> None:
    meta = {p.key: p.value for p in onnx.load(str(fp32_file)).metadata_props}
    assert meta["format"] == "fastdiffsr-onnx" and meta["method"] == "rdsr"
    assert (meta["scale"], meta["prior_noise"], meta["dtype"]) == ("4", "8", "fp32")
    assert json.loads(meta["provenance"]) == {"note": "test"}
    model = load_model(fp32_file)
    assert isinstance(model, OnnxUpscaler) and model.tile_overlap == RDSR(TINY).tile_overlap


def test_int8_quantizes_the_convolutions_but_the_output_layer(rdsr, train_folder,
                                                                tmp_path) -> None:
    crops = calibration_crops(train_folder, 16, 4, count=4)
    path = export_onnx(rdsr, tmp_path / "int8.onnx", tile=16, dtype="int8", calibration=crops)
    graph = onnx.load(str(path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert all(c.input[1] in dequantized for c in convs[:-1])  # int8 weights
    assert convs[-1].input[1] not in dequantized
    lr = torch.rand(1, 3, 16, 16)
    a = upscale_tensor(rdsr, lr)
    b = upscale_tensor(OnnxUpscaler(path), lr)
    assert 0 < (a - b).abs().mean() < 0.02
    with pytest.raises(ValueError, match="calibration"):
        export_onnx(rdsr, tmp_path / "x.onnx", tile=16, dtype="int8")


@pytest.mark.parametrize("suffix", [".onnx", ".pte"])
def test_cli_export_then_upscale_with_the_file(tmp_path, suffix) -> None:
    if suffix == ".pte":
        pytest.importorskip("executorch")
    src = save_model(RDSR(TINY), tmp_path / "tiny.safetensors")
    out = tmp_path / f"tiny{suffix}"
    assert main(["export", "-n", str(src), "-o", str(out), "--tile", "16"]) == 0
    image = tmp_path / "in.png"
    write_image(image, Picture(torch.rand(12, 10, 3).numpy()))
    assert main(["upscale", "-i", str(image), "-o", str(tmp_path / "res"), "-n", str(out)]) == 0
    assert (tmp_path / "res" / "in_out.png").is_file()


def test_a_latent_model_exports_at_its_tile_size_and_pytorch_is_untouched(tmp_path) -> None:
    """YONOS-SR's graph runs 128 px tiles (its bicubic resize is fixed to the size); through
    the same tiler and image noise it equals PyTorch, and tracing leaves the PyTorch model (and
    the resize cache) as it was."""
    from fastdiffsr.methods.yonos.model import YONOS, YONOSConfig
    from fastdiffsr.nn.autoencoder import AutoencoderConfig
    from fastdiffsr.nn.unet import UNetConfig

    torch.manual_seed(0)
    cfg = YONOSConfig(autoencoder=AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2),
                                                    groups=4, attention_mid=False),
                      unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                                      attention_levels=(1,), heads=2, groups=4))
    model = YONOS(cfg).eval()
    lr = torch.rand(1, 3, 150, 140)  # two tiles of 128 per side
    before = upscale_tensor(model, lr, UpscaleOptions(seed=2))
    resize._contributions_cpu.cache_clear()  # the export is the first to ask for its matrices
    ort = OnnxUpscaler(export_onnx(model, tmp_path / "y.onnx"))
    assert ort.static_side == 128 and ort.noise_channels == 4
    assert torch.equal(upscale_tensor(model, lr, UpscaleOptions(seed=2)), before)
    assert (upscale_tensor(ort, lr, UpscaleOptions(seed=2)) - before).abs().max() < 1e-3
    with pytest.raises(DeployError, match="128 px tiles only"):
        upscale_tensor(ort, lr, UpscaleOptions(tile=140))


def test_bidiffsr_exports_its_packed_1_bit_layers_as_float_convolutions(tmp_path) -> None:
    from dataclasses import replace

    from fastdiffsr.methods.bidiffsr.model import BIDiffSR

    from .test_bidiffsr import CPU_TINY, _model

    model = _model(replace(CPU_TINY, unshuffle=4))  # attention over 64 x 64 tokens
    model.fuse()
    ort = OnnxUpscaler(export_onnx(model, tmp_path / "b.onnx"))
    assert isinstance(model, BIDiffSR) and ort.static_side == model.max_tile
    lr = torch.rand(1, 3, 128, 128)
    a, b = upscale_tensor(model, lr), upscale_tensor(ort, lr)
    # a sign that flips on a float rounding difference moves a few outputs, not the image
    assert (a - b).abs().mean() < 1e-3


def test_a_model_that_cannot_be_exported_is_one_error_line(tmp_path, capsys) -> None:
    assert main(["export", "-n", "bicubic", "-o", str(tmp_path / "b.onnx")]) == 2
    assert "cannot be exported" in capsys.readouterr().err


def test_without_the_extra_export_says_what_to_install(tmp_path) -> None:
    code = ("import sys; sys.modules['onnxruntime'] = None; from fastdiffsr.cli import main; "
            f"sys.exit(main(['export', '-n', 'rdsr-x4', '-o', '{tmp_path / 'x.onnx'}']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fastdiffsr export: error: ONNX export and .onnx models need the deploy extra: "
        "pip install 'fastdiffsr[deploy]'"]
