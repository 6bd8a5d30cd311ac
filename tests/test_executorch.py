"""ExecuTorch programs (.pte, XNNPACK): export fp32 and int8, run through the same tiler and
noise as PyTorch, self-describing through constant methods, and bad files (the CLI's export
and upscale: test_deploy)."""

from __future__ import annotations

import pytest
import torch

from fastdiffsr.data.datasets import calibration_crops
from fastdiffsr.errors import DeployError
from fastdiffsr.methods.rdsr.model import RDSR
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor
from fastdiffsr.zoo import load_model

from .test_deploy import TINY, small_rdsr

pytest.importorskip("executorch")

from fastdiffsr.backends.executorch import PteUpscaler, export_pte  # noqa: E402


@pytest.fixture(scope="module")
def rdsr() -> RDSR:
    return small_rdsr()


@pytest.fixture(scope="module")
def fp32_file(rdsr, tmp_path_factory):
    return export_pte(rdsr, tmp_path_factory.mktemp("pte") / "tiny.pte", tile=16,
                      provenance={"note": "test"})


def test_fp32_program_equals_pytorch_through_the_same_path(rdsr, fp32_file) -> None:
    """Within 1e-3 per pixel at odd sizes of at least 16 px (the program's smallest tile: a
    smaller image is padded up to it, and then differs near its padded side)."""
    pte = PteUpscaler(fp32_file)
    assert pte.minimum == 16
    for shape, seed in (((1, 3, 19, 17), 0), ((1, 3, 23, 16), 5)):
        lr = torch.rand(shape)
        opts = UpscaleOptions(seed=seed)
        a, b = upscale_tensor(rdsr, lr, opts), upscale_tensor(pte, lr, opts)
        assert a.shape == b.shape == (1, 3, shape[2] * 4, shape[3] * 4)
        assert (a - b).abs().max() < 1e-3
    tiled = upscale_tensor(pte, torch.rand(1, 3, 40, 40), UpscaleOptions(tile=16, batch_tiles=3))
    assert tiled.shape == (1, 3, 160, 160)


def test_program_is_self_describing(fp32_file) -> None:
    model = load_model(fp32_file)
    assert isinstance(model, PteUpscaler)
    assert (model.method, model.scale, model.prior_noise, model.dtype) == ("rdsr", 4, 8, "fp32")
    assert model.tile_overlap == RDSR(TINY).tile_overlap
    assert model.provenance == {"note": "test"}


def test_int8_program_is_close_and_smaller(rdsr, fp32_file, train_folder, tmp_path) -> None:
    crops = calibration_crops(train_folder, 16, 4, count=4)
    path = export_pte(rdsr, tmp_path / "int8.pte", tile=16, dtype="int8", calibration=crops)
    lr = torch.rand(1, 3, 16, 16)
    a, b = upscale_tensor(rdsr, lr), upscale_tensor(PteUpscaler(path), lr)
    assert 0 < (a - b).abs().mean() < 0.02
    assert PteUpscaler(path).dtype == "int8"
    with pytest.raises(ValueError, match="calibration"):
        export_pte(rdsr, tmp_path / "x.pte", tile=16, dtype="int8")


def test_a_broken_program_is_one_error(tmp_path) -> None:
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program" * 10)
    with pytest.raises(DeployError, match="not a readable ExecuTorch program"):
        load_model(bad)


def test_bidiffsr_program_runs_its_bicubic_condition_like_pytorch(tmp_path) -> None:
    """BI-DiffSR's graph holds the MATLAB bicubic resize, whose border taps are mirrored from
    negative indices: ExecuTorch's integer remainder truncates (C's %), which sent them out of
    range (error 0x12 at run time) until the resize folded negatives first. The full-precision
    twin, so that no binary sign can flip on a rounding difference."""
    from dataclasses import replace

    from .test_bidiffsr import CPU_TINY, _model

    model = _model(replace(CPU_TINY, unshuffle=4, binarize=False))
    pte = PteUpscaler(export_pte(model, tmp_path / "b.pte"))
    lr = torch.rand(1, 3, 128, 128)
    assert (upscale_tensor(model, lr) - upscale_tensor(pte, lr)).abs().max() < 1e-3
