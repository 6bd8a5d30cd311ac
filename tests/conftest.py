"""Shared fixtures: the benchmark data (skipped when absent) and tiny synthetic training sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastdiffsr.demo import draw_scene
from fastdiffsr.imageio import Picture, write_image
from fastdiffsr.upscaler import UpscaleOptions, upscale_tensor

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def bench_root() -> Path:
    root = SHARED_DATA / "bench"
    if not (root / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark data not found at {root} (present in CI, not on a fresh machine)")
    return root


@pytest.fixture(scope="session")
def train_folder(tmp_path_factory) -> Path:
    """Eight 128x128 RGB PNGs cut from the demo scene plus noise: a tiny HR training set."""
    folder = tmp_path_factory.mktemp("train")
    scene = draw_scene(384)
    rng = np.random.default_rng(0)
    for i in range(8):
        y, x = rng.integers(0, 384 - 128, size=2)
        crop = scene[y : y + 128, x : x + 128] + 0.03 * rng.standard_normal((128, 128, 3))
        write_image(folder / f"img{i}.png", Picture(np.clip(crop, 0, 1).astype(np.float32)))
    return folder


def tiny_rdsr_toml(data: Path, batch: int = 2, iterations: int = 4, workers: int = 0) -> str:
    """A tiny two-stage RDSR config that trains in seconds on ``data``."""
    stage = (f"iterations = {iterations}\nbatch_size = {batch}\nlr_patch = 8\nwarmup = 2\n"
             f"val_every = 2\ncheckpoint_every = 2\nlog_every = 1\nworkers = {workers}\n"
             f"holdout = 2\ndata = \"{data}\"\nlr = 1e-3\n")
    return ("method = \"rdsr\"\nname = \"rdsr-tiny\"\n[model]\nchannels = 8\nblocks = 2\n"
            "prior_dim = 8\nlpe_channels = 8\ndenoiser_width = 16\n"
            f"[prior]\n{stage}[diffusion]\n{stage}")


def tile_noise_received(model, lr: torch.Tensor, seed: int) -> tuple[torch.Tensor, list,
                                                                     torch.Tensor]:
    """Upscale ``lr`` in 16 px tiles (overlap 4) and record the noise each tile's function
    receives: (the image's ``image_noise``, the received crops, the output)."""
    full = model.image_noise(lr, seed=seed)
    received = []
    prepare = model.prepare

    def spy(x, sampling_steps=None, seed=0):
        fn = prepare(x, sampling_steps, seed)
        return lambda tile, noise: (received.append(noise.clone()), fn(tile, noise))[1]

    model.prepare = spy
    opts = UpscaleOptions(tile=16, tile_overlap=4, batch_tiles=1, seed=seed)
    return full, received, upscale_tensor(model, lr, opts)


def perturbed_unet_model(build, seed: int = 0):
    """``build()`` under ``seed``, in eval mode, its UNet moved off its init (whose output layer
    is zero) so that the UNet's output matters."""
    torch.manual_seed(seed)
    model = build().eval()
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def assert_seed_decides(model) -> None:
    """Same seed, same output; another seed, another output (a 16 px LR)."""
    lr = torch.rand(1, 3, 16, 16)
    a = upscale_tensor(model, lr, UpscaleOptions(seed=1))
    b = upscale_tensor(model, lr, UpscaleOptions(seed=1))
    c = upscale_tensor(model, lr, UpscaleOptions(seed=2))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def assert_tiles_get_their_noise_crop(model) -> torch.Tensor:
    """A 24 x 40 LR in 6 tiles of 16 px: each tile receives the crop of the image's one
    ``image_noise`` (on a grid r times the LR's) at its own position. Returns that noise."""
    full, received, _ = tile_noise_received(model, torch.rand(1, 3, 24, 40), seed=3)
    r = full.shape[-2] // 24
    starts = [(y, x) for y in (0, 8) for x in (0, 12, 24)]
    assert len(received) == len(starts)
    for tile, (y, x) in zip(received, starts, strict=True):
        assert torch.equal(tile, full[..., r * y : r * (y + 16), r * x : r * (x + 16)])
    return full
