"""RDSR: fused == unfused, the deployed body's modules, the paper size, one prior per image."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from fastdiffsr.api import UpscaleOptions, upscale_tensor
from fastdiffsr.demo import draw_scene
from fastdiffsr.imageio import picture_to_tensor
from fastdiffsr.methods.rdsr.model import RDSR, RDSRConfig
from fastdiffsr.resize import imresize
from fastdiffsr.train.recipes.rdsr import RDSRRecipe, charbonnier, diffusion_stage, prior_stage
from fastdiffsr.train.run import load_recipe
from fastdiffsr.upscaler import count_params
from fastdiffsr.zoo import available_models, load_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = RDSRConfig(channels=12, blocks=3, prior_dim=8, lpe_channels=8, denoiser_width=16)


def _perturbed(cfg: RDSRConfig) -> RDSR:
    """An RDSR whose every weight (FiLM included) is non-trivial."""
    torch.manual_seed(0)
    model = RDSR(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _real_lr() -> torch.Tensor:
    return imresize(picture_to_tensor(draw_scene(256)), 0.25, uint8_passes=True)


def _fused(model: RDSR) -> RDSR:
    fused = copy.deepcopy(model)
    fused.fuse()
    return fused


@pytest.mark.parametrize("kind", ["random", "real"])
@pytest.mark.parametrize("negative_slope", [0.0, 0.1])
def test_deployed_equals_unfused(kind: str, negative_slope: float) -> None:
    model = _perturbed(dataclasses.replace(SMALL, negative_slope=negative_slope))
    x = torch.rand(1, 3, 37, 29) if kind == "random" else _real_lr()
    with torch.no_grad():
        assert (model(x) - _fused(model)(x)).abs().max() < 1e-4


@pytest.mark.skipif("rdsr-x4" not in available_models(), reason="rdsr-x4 not shipped yet")
def test_shipped_deployed_equals_unfused() -> None:
    x = _real_lr()
    with torch.no_grad():
        a = load_model("rdsr-x4", deploy=False)(x)
        b = load_model("rdsr-x4", deploy=True)(x)
    assert (a - b).abs().max() < 1e-4


@pytest.mark.parametrize(("negative_slope", "act"), [(0.0, nn.ReLU), (0.1, nn.LeakyReLU)])
def test_deployed_body_is_conv3x3_and_relu_only(negative_slope: float, act: type) -> None:
    cfg = dataclasses.replace(SMALL, negative_slope=negative_slope)
    body = _fused(_perturbed(cfg)).prepare(torch.rand(1, 3, 16, 16))
    kinds = {type(m) for m in body.body}
    assert kinds == {nn.Conv2d, act}
    assert all(m.kernel_size == (3, 3) for m in body.body if isinstance(m, nn.Conv2d))
    assert SMALL.blocks + 2 == sum(isinstance(m, nn.Conv2d) for m in body.body)


def test_unfused_model_really_has_branches() -> None:
    model = _perturbed(SMALL)
    assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.repd.modules())


def test_paper_config_has_2_2m_parameters() -> None:
    _, _, recipe = load_recipe(ROOT / "configs" / "rdsr" / "paper.toml")
    model = RDSR(recipe.model)
    model.fuse()  # the inference model: LPE_lr + denoiser + fused RepD
    assert abs(count_params(model) - 2.2e6) / 2.2e6 < 0.05


def test_prior_is_computed_once_per_image_not_per_tile() -> None:
    model = _fused(_perturbed(SMALL))
    calls = []
    model.prior.register_forward_hook(lambda *a: calls.append(1))
    tiles = []
    x = torch.rand(1, 3, 40, 40)
    y = upscale_tensor(model, x, UpscaleOptions(tile=16, tile_overlap=8),
                       progress=lambda done, total: tiles.append(total))
    assert y.shape == (1, 3, 160, 160)
    assert len(calls) == 1 and tiles[-1] > 1


def test_tiled_equals_whole_when_overlap_covers_receptive_field() -> None:
    model = _fused(_perturbed(SMALL))
    x = torch.rand(1, 3, 45, 38)
    whole = upscale_tensor(model, x)
    radius = SMALL.blocks + 2
    tiled = upscale_tensor(model, x, UpscaleOptions(tile=8 * radius, tile_overlap=4 * radius))
    assert (whole - tiled).abs().max() < 1e-5


def test_same_seed_same_output_other_seed_other_prior() -> None:
    model = _fused(_perturbed(SMALL))
    x = torch.rand(1, 3, 16, 16)
    a = upscale_tensor(model, x, UpscaleOptions(seed=3))
    b = upscale_tensor(model, x, UpscaleOptions(seed=3))
    assert torch.equal(a, b)
    assert not torch.equal(model.estimate_prior(x, 3), model.estimate_prior(x, 4))


@pytest.mark.parametrize("channels", [12, 48])  # 48: the x4 tail is 48 -> 48, identity included
def test_zero_init_tail_starts_as_the_nearest_skip(channels: int) -> None:
    cfg = dataclasses.replace(SMALL, channels=channels)
    torch.manual_seed(0)
    stage = prior_stage(RDSRRecipe(model=cfg, zero_init_tail=True), {})
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    nearest = torch.nn.functional.interpolate(lr, scale_factor=4, mode="nearest")
    assert (stage.validation_sr(lr, hr) - nearest).abs().max() < 1e-6
    stage.repd.set_explicit(False)
    default = prior_stage(RDSRRecipe(model=cfg), {})
    assert (default.validation_sr(lr, hr) - nearest).abs().mean() > 0.1


@pytest.mark.parametrize("name", ["l1", "l2", "charbonnier"])
def test_diffusion_sr_loss(name: str) -> None:
    torch.manual_seed(0)
    recipe = RDSRRecipe(model=SMALL, diffusion_sr_loss=name)
    weights = {"prior": prior_stage(recipe, {}).state_dict()}
    stage = diffusion_stage(recipe, weights)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    torch.manual_seed(1)
    loss, logs = stage(lr, hr)
    torch.manual_seed(1)
    sr = stage.model.repd(lr, stage.model.prior(lr))
    expected = {"l1": (sr - hr).abs().mean(), "l2": (sr - hr).square().mean(),
                "charbonnier": ((sr - hr).square() + 1e-6).sqrt().mean()}[name]
    assert torch.allclose(logs["sr"], expected)
    assert torch.allclose(loss, logs["sr"] + logs["z_l1"])
    assert charbonnier(hr, hr) == pytest.approx(1e-3)


def test_unknown_diffusion_sr_loss_is_an_error() -> None:
    with pytest.raises(ValueError, match="diffusion_sr_loss"):
        RDSRRecipe(diffusion_sr_loss="l3")
