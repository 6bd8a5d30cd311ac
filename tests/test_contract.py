"""The method contract, over every entry of the registries: the inference side (``zoo.Method``:
Config, build; save, load, upscale an odd-sized input, outputs equal) and the training side
(``train.registry.TrainingMethod``: Recipe, STAGES, EXPORT); and inference never imports
training (checked in a fresh process)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from fastdiffsr.methods.bicubic import BicubicConfig
from fastdiffsr.methods.bidiffsr.model import BIDiffSRConfig
from fastdiffsr.methods.edgesdsr.model import EdgeSDSRConfig
from fastdiffsr.methods.rdsr.model import RDSRConfig
from fastdiffsr.methods.yonos.model import YONOSConfig
from fastdiffsr.nn.autoencoder import AutoencoderConfig
from fastdiffsr.nn.unet import UNetConfig
from fastdiffsr.train.registry import RECIPES, TrainingMethod
from fastdiffsr.train.trainer import TrainConfig
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor
from fastdiffsr.zoo import METHODS, Method, load_model, method, save_model

from .conftest import ROOT

_AE = AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4, attention_mid=False)
_UNET = UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                   attention_levels=(1,), heads=2, groups=4)
TINY = {  # one tiny config per registered method
    "bicubic": BicubicConfig(scale=3),
    "rdsr": RDSRConfig(channels=8, blocks=2, prior_dim=8, lpe_channels=8, denoiser_width=16),
    "bidiffsr": BIDiffSRConfig(channels=8, channel_mults=(1, 2), res_blocks=1, norm_groups=4,
                               fp_levels=(0,), sampling_steps=2),
    "yonos": YONOSConfig(autoencoder=_AE, unet=_UNET),
    "edgesdsr": EdgeSDSRConfig(autoencoder=_AE, unet=_UNET),
}


def test_every_registered_method_has_a_tiny_config_here() -> None:
    assert set(TINY) == set(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_build_save_load_upscale_round_trip(name: str, tmp_path) -> None:
    """A model built from its config, saved and loaded (deployed form), upscales an odd-sized
    LR (padded to the model's requirements, cropped back) exactly as the built model does."""
    module = method(name)
    assert isinstance(module, Method)
    torch.manual_seed(0)
    model = module.build(TINY[name]).eval()
    with torch.no_grad():  # off the init (zero-initialised layers would hide the weights)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loaded = load_model(save_model(model, tmp_path / f"{name}.safetensors"))
    assert loaded.method == name and loaded.cfg == TINY[name]
    model.fuse()
    lr = torch.rand(1, 3, 13, 11)
    opts = UpscaleOptions(seed=4)
    out = upscale_tensor(model, lr, opts)
    s = model.scale
    assert out.shape == (1, 3, 13 * s, 11 * s) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, upscale_tensor(loaded, lr, opts))
    assert torch.equal(loaded(lr), upscale_tensor(loaded, lr, UpscaleOptions(tile=0)))


def test_every_trainable_method_has_a_recipe() -> None:
    assert set(RECIPES) == set(METHODS) - {"bicubic"}


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_contract(name: str) -> None:
    """Each stage's TrainConfig is the recipe field of its name; needs and the export's needs
    name stages; the recipe's model is the method's Config."""
    training = RECIPES[name]
    assert isinstance(training, TrainingMethod)
    fields = {f.name: f.type for f in dataclasses.fields(training.Recipe)}
    names = [s.name for s in training.STAGES]
    recipe = training.Recipe(**({"autoencoder_from": "x"} if "autoencoder_from" in fields else {}))
    assert isinstance(recipe.model, method(name).Config)
    for stage in training.STAGES:
        assert isinstance(getattr(recipe, stage.name), TrainConfig)
        assert set(stage.needs) <= set(names) and stage.name not in stage.needs
    assert set(training.EXPORT.needs) <= set(names)
    assert not any(s.ablation for s in training.STAGES if s.name in training.EXPORT.needs)


_PROBE = """
import json, sys
import numpy as np
import fastdiffsr
from fastdiffsr.cli import main
name, image, out = sys.argv[1:4]
fastdiffsr.upscale(np.zeros((12, 10, 3), np.uint8), model=name)
assert main(["upscale", "-i", image, "-o", out, "-n", name]) == 0
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fastdiffsr"))))
"""
_SHIPPED_METHOD = {"rdsr-x4": "rdsr", "yonos-x4": "yonos", "edgesdsr-x4": "edgesdsr",
                   "bidiffsr-x4": "bidiffsr", "bicubic": "bicubic"}
_BASES = {"edgesdsr": {"yonos"}}  # Edge-SD-SR's model is built on YONOS-SR's


@pytest.mark.parametrize("name", list(_SHIPPED_METHOD))
def test_upscaling_imports_no_training_and_only_its_own_method(name: str, tmp_path) -> None:
    image = tmp_path / "in.png"
    from fastdiffsr.imageio import Picture, write_image

    write_image(image, Picture(torch.rand(20, 16, 3).numpy()))
    proc = subprocess.run([sys.executable, "-c", _PROBE, name, str(image), str(tmp_path / "o")],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [m for m in modules if m.startswith(("fastdiffsr.train", "fastdiffsr.data"))]
    own = _SHIPPED_METHOD[name]
    allowed = {own} | _BASES.get(own, set())
    loaded = {m.split(".")[2] for m in modules if m.startswith("fastdiffsr.methods.")}
    assert loaded == allowed
