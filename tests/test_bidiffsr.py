"""BI-DiffSR: paper sizes, where full precision sits, sampler wiring, seeds, the training loss,
packed deployment (bitwise == simulated) and the zoo / training round trips."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from fastdiffsr.bench import bench_table, time_upscale
from fastdiffsr.diffusion.sampling import ddim_timesteps, q_sample, sample
from fastdiffsr.methods.bidiffsr.model import BIDiffSR, BIDiffSRConfig, ResBlock
from fastdiffsr.nn.binary import (
    BIConv,
    BinaryConv2d,
    CSFusion,
    FPConv,
    PackedBinaryConv2d,
    binary_complexity,
)
from fastdiffsr.resize import imresize
from fastdiffsr.tiling import tile_starts
from fastdiffsr.train.checkpoints import load_stages
from fastdiffsr.train.recipes import bidiffsr as br
from fastdiffsr.train.run import load_recipe, run
from fastdiffsr.upscaler import UpscaleOptions, measure_flops, upscale_tensor
from fastdiffsr.zoo import load_model, save_model

from .conftest import tile_noise_received

ROOT = Path(__file__).resolve().parents[1]
TINY = BIDiffSRConfig(channels=8, channel_mults=(1, 2), res_blocks=1, norm_groups=4,
                      fp_levels=(0,), sampling_steps=2)


def _model(cfg: BIDiffSRConfig = TINY) -> BIDiffSR:
    torch.manual_seed(0)
    model = BIDiffSR(cfg).eval()
    with torch.no_grad():  # TaR / TaA start at zero shifts: make every part non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _paper() -> BIDiffSR:
    _, _, recipe = load_recipe(ROOT / "configs" / "bidiffsr" / "paper.toml")
    return BIDiffSR(recipe.model).eval()


def test_paper_params_and_ops() -> None:
    """README: 4.58M params (binary / 32 + FP), 36.67G OPs for a 3x256x256 output."""
    model = _paper()
    x, t = torch.randn(1, 3, 256, 256), torch.tensor([1000])
    c = binary_complexity(model, lambda: model.unet(x, x, t))
    assert abs(c.params / 4.58e6 - 1) < 0.02
    assert abs(c.ops / 36.67e9 - 1) < 0.03
    assert c.binary_params > 10 * c.fp_params  # most weights are binary


def test_full_precision_exactly_where_the_official_code_has_it() -> None:
    unet = _paper().unet
    assert all(isinstance(m, BIConv) for b in unet.down if isinstance(b, ResBlock)
               for m in (b.conv1, b.conv2))
    assert isinstance(unet.mid1.conv1, BIConv) and isinstance(unet.mid2.conv2, BIConv)
    # decoder: 4 levels x 3 (CS-Fusion, ResBlock) pairs, lowest resolution first, CP-Up between
    fusions = [m for m in unet.up if isinstance(m, CSFusion)]
    blocks = [m for m in unet.up if isinstance(m, ResBlock)]
    assert len(fusions) == len(blocks) == 12
    fp = [isinstance(f.conv1, FPConv) for f in fusions]
    assert fp == [False] * 6 + [True] * 6  # levels 1 and 0 (official fp_res = [256, 128])
    assert [isinstance(b.conv1, FPConv) for b in blocks] == fp
    # 6 binary (CS-Fusion, ResBlock) pairs of 2 + 2 BIConvs, and 3 CP-Ups (always binary) of 2
    assert sum(isinstance(m, BIConv) for m in unet.up.modules()) == 6 * 4 + 3 * 2
    assert unet.conv_in.weight.shape == (64, 6, 3, 3)
    assert unet.conv_out.weight.shape == (3, 64, 3, 3)
    assert unet.mid_attn.norm.num_groups == 16


def test_shapes_seeds_and_size_requirements() -> None:
    model = _model()
    assert model.multiple_of == 1  # HR side multiple of 2 at x4
    lr = torch.rand(1, 3, 6, 10)
    a = model(lr)
    assert a.shape == (1, 3, 24, 40) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, model(lr))
    noise = model.image_noise(lr, seed=1)
    assert noise.shape == (1, 3, 24, 40)
    b = model.prepare(lr, seed=1)(lr, noise)
    assert (a - b).abs().max() > 1e-3  # another seed, another sample
    paper = BIDiffSR(BIDiffSRConfig())
    assert paper.multiple_of == 2 and paper.default_sampling_steps == 50


def test_image_noise_is_x_T_at_hr_resolution() -> None:
    model, lr = _model(), torch.rand(1, 3, 8, 12)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(model.image_noise(lr, seed=7), torch.randn(1, 3, 32, 48, generator=g))


def test_tiles_receive_their_crop_of_the_image_noise() -> None:
    model, lr = _model(), torch.rand(1, 3, 24, 40)
    full, received, out = tile_noise_received(model, lr, seed=3)
    assert out.shape == (1, 3, 96, 160)
    starts = [(y, x) for y in (0, 8) for x in (0, 12, 24)]
    assert len(received) == len(starts)
    for tile, (y, x) in zip(received, starts, strict=True):
        assert torch.equal(tile, full[..., 4 * y : 4 * (y + 16), 4 * x : 4 * (x + 16)])


def test_ddim_visits_leading_timesteps_with_eps_prediction() -> None:
    model, seen = _model(), []
    forward = model.unet.forward
    model.unet.forward = lambda x, c, t: (seen.append(t.tolist()), forward(x, c, t))[1]
    model.prepare(torch.rand(1, 3, 4, 4), sampling_steps=4)(torch.rand(1, 3, 4, 4),
                                                            torch.randn(1, 3, 16, 16))
    assert seen == [[1500], [1000], [500], [0]]  # diffusers' DDIMScheduler, T = 2000


def test_training_loss_is_l1_on_eps() -> None:
    stage = br.DiffusionStage(TINY, br.BIDiffSRRecipe(val_sampling_steps=1))
    hr = torch.rand(3, 3, 16, 16)
    lr = imresize(hr, 0.25)
    torch.manual_seed(5)
    loss, _ = stage(lr, hr)
    torch.manual_seed(5)
    abar = stage.model.abar
    t = torch.randint(len(abar), (3,))
    eps = torch.randn_like(hr)
    with torch.no_grad():
        pred = stage.model.unet(q_sample(hr, abar[t], eps), imresize(lr, 4), t)
    assert torch.allclose(loss, F.l1_loss(pred, eps))
    loss.backward()
    w = stage.model.unet.down[0].conv1.conv.weight
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_packed_model_matches_training_form_and_bitwise_matches_simulated() -> None:
    model = _model()
    packed = copy.deepcopy(model)
    packed.fuse()
    assert not any(isinstance(m, BinaryConv2d) for m in packed.modules())
    x, c, t = torch.randn(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.tensor([3, 1999])
    with torch.no_grad():
        ref, simulated = model.unet(x, c, t), packed.unet(x, c, t)
        for m in packed.modules():
            if isinstance(m, PackedBinaryConv2d):
                m.path = "torch"
        bitwise = packed.unet(x, c, t)
    assert (ref - simulated).abs().max() < 1e-4
    assert (bitwise - simulated).abs().max() < 1e-5


def test_flops_count_the_binary_convs_the_compiled_kernel_runs() -> None:
    """torch's flop counter cannot see the XNOR kernel: ``measure_flops`` runs the packed convs
    on their float path for the count, so the deployed model counts as its training form, and
    each layer's path is back where it was."""
    model = _model()
    packed = copy.deepcopy(model)
    packed.fuse()
    layers = [m for m in packed.modules() if isinstance(m, PackedBinaryConv2d)]
    layers[0].path = "torch"
    x = torch.rand(1, 3, 16, 16)
    assert (measure_flops(packed, lambda: upscale_tensor(packed, x))
            == measure_flops(model, lambda: upscale_tensor(model, x)) > 0)
    assert [m.path for m in layers] == ["torch"] + ["auto"] * (len(layers) - 1)


def _bits_keys(path: Path) -> tuple[list[str], list[str]]:
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        bits = [k for k in keys if k.endswith(".conv.bits")]
        assert all(f.get_tensor(k).dtype == torch.uint8 for k in bits)
    return keys, bits


def test_zoo_round_trip_stores_packed_bits(tmp_path) -> None:
    model = _model()
    model.fuse()
    path = save_model(model, tmp_path / "tiny.safetensors")
    keys, bits = _bits_keys(path)
    n_binary = sum(isinstance(m, BIConv) for m in model.modules())
    assert len(bits) == n_binary
    assert not any(k.endswith(".conv.weight") and ".conv1.conv." in k for k in keys)
    lr = torch.rand(1, 3, 8, 8)
    expected = model(lr)
    assert torch.equal(load_model(path)(lr), expected)
    assert torch.equal(load_model(path, deploy=False)(lr), expected)
    # a training-form file is packed on load
    train_form = _model()
    path2 = save_model(train_form, tmp_path / "train.safetensors")
    assert _bits_keys(path2)[1] == []
    assert torch.allclose(load_model(path2)(lr), train_form(lr), atol=1e-4)


def tiny_bidiffsr_toml(data: Path) -> str:
    return ("method = \"bidiffsr\"\nname = \"bidiffsr-tiny\"\nval_sampling_steps = 1\n[model]\n"
            "channels = 8\nchannel_mults = [1, 2]\nres_blocks = 1\nnorm_groups = 4\n"
            "fp_levels = [0]\nsampling_steps = 2\n" + "".join(
                f"[{stage}]\niterations = 1\nbatch_size = 2\nlr_patch = 8\nwarmup = 1\n"
                "val_every = 1\ncheckpoint_every = 1\nlog_every = 1\nworkers = 0\n"
                f"holdout = 1\ndata = \"{data}\"\n" for stage in ("twin", "diffusion")))


def test_one_training_iteration_exports_a_packed_model(tmp_path, train_folder) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_bidiffsr_toml(train_folder))
    out = tmp_path / "run"
    path = run(config, out, torch.device("cpu"), None, False)
    assert path == out / "bidiffsr-tiny.safetensors"
    assert '"val_psnr"' in (out / "diffusion" / "log.jsonl").read_text()
    assert _bits_keys(path)[1]
    model = load_model(path)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", ["paper", "x4"])
def test_configs_load(name: str) -> None:
    _, _, recipe = load_recipe(ROOT / "configs" / "bidiffsr" / f"{name}.toml")
    assert recipe.model.timesteps == 2000 and recipe.model.timestep_groups == 5


def test_bench_counts_tiles_and_sampling_steps_and_divides_latency_by_them():
    """``fastdiffsr bench`` rows of a sampler: tiles (evaluations per sampling step), sampling
    steps, latency per sampling step."""
    model, opts = _model(), UpscaleOptions(tile=16, tile_overlap=4, sampling_steps=3)
    timing = time_upscale(model, 32, repeats=1, opts=opts)
    assert timing.tiles == len(tile_starts(32, 16, 4)) ** 2 > 1
    assert timing.sampling_steps == 3
    table = bench_table("tiny", model, [timing], [0.0], threads=1, matmul=100.0)
    per_step = f"{timing.latency_s * 1e3 / 3:.1f}"
    assert f"| 32->128 | {timing.tiles} | 3 | {timing.latency_s * 1e3:.1f} | {per_step} |" in table


def test_sampler_clips_each_x0_hat_to_the_data_range():
    """``clip_x0``: every DDIM step clamps x0_hat to [0, 1] (diffusers' clip_sample)."""
    model, lr = _model(), torch.rand(1, 3, 8, 8)
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cond, ts = imresize(lr, 4), ddim_timesteps(TINY.timesteps, 3, "leading")
    with torch.no_grad():
        got = model.super_resolve(lr, noise, 3)
        want = sample(lambda x, t: model.predict(x, t, cond), noise, model.abar, ts, "eps",
                      clip=(0.0, 1.0))
        unclipped = BIDiffSR(replace(TINY, clip_x0=False))
        unclipped.load_state_dict(model.state_dict())
        assert torch.equal(got, want.clamp(0, 1))
        assert (got - unclipped.eval().super_resolve(lr, noise, 3)).abs().max() > 1e-3


CPU_TINY = replace(TINY, prediction="x0", residual=True, spacing="trailing", unshuffle=2,
                   sampling_steps=1)


def test_cpu_formulation_samples_the_residual_from_the_noised_upsampled_lr() -> None:
    """residual + x0 + trailing, one step: the UNet sees y_T = sqrt(1 - abar_{T-1}) noise at
    t = T - 1 beside bicubic_s(LR), and SR = clamp(bicubic_s(LR) + its y0_hat)."""
    model, lr = _model(CPU_TINY), torch.rand(1, 3, 8, 8)
    assert model.multiple_of == 1 and model.unet.downsample_factor == 4  # u 2^(L-1)
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seen = []
    forward = model.unet.forward
    model.unet.forward = lambda y, c, t: (seen.append((y, c, t.tolist())), forward(y, c, t))[1]
    with torch.no_grad():
        out = model.super_resolve(lr, noise, 1)
        (y, cond, t), = seen
        assert t == [TINY.timesteps - 1]
        torch.testing.assert_close(y, (1 - model.abar[-1]).sqrt() * noise)
        torch.testing.assert_close(cond, imresize(lr, 4))
        assert torch.equal(out, (cond + forward(y, cond, torch.tensor(t))).clamp(0, 1))


def test_cpu_formulation_loss_is_l1_on_the_residual() -> None:
    stage = br.DiffusionStage(CPU_TINY, br.BIDiffSRRecipe(val_sampling_steps=1))
    hr = torch.rand(2, 3, 16, 16)
    lr = imresize(hr, 0.25)
    torch.manual_seed(5)
    loss, _ = stage(lr, hr)
    torch.manual_seed(5)
    abar, cond = stage.model.abar, imresize(lr, 4)
    t = torch.randint(len(abar), (2,))
    y = hr - cond
    with torch.no_grad():
        pred = stage.model.unet(q_sample(y, abar[t], torch.randn_like(hr)), cond, t)
    torch.testing.assert_close(loss, F.l1_loss(pred, y))


def test_sampled_train_timesteps_are_the_samplers() -> None:
    """``train_timesteps = "sampled"`` trains at the timesteps the default sampler visits:
    [T - 1] for one trailing step, the four of 4 steps each drawn; a typo is an error."""
    seen = []
    for steps in (1, 4):
        cfg = replace(CPU_TINY, sampling_steps=steps)
        stage = br.DiffusionStage(cfg, br.BIDiffSRRecipe(train_timesteps="sampled"))
        unet = stage.model.unet
        unet.forward = lambda x, c, t, f=unet.forward: (seen.extend(t.tolist()), f(x, c, t))[1]
        hr = torch.rand(64, 3, 8, 8)
        stage(imresize(hr, 0.25), hr)
        assert set(seen) == set(ddim_timesteps(cfg.timesteps, steps, "trailing"))
        seen.clear()
    with pytest.raises(ValueError, match="train_timesteps"):
        br.BIDiffSRRecipe(train_timesteps="sampeld")


def test_a_quiet_twin_starts_as_the_bicubic_skip_blind_to_y_t_and_moves_off_it() -> None:
    """quiet_init: the twin's prediction is exactly zero at first and y_t has no effect on
    conv_in; one training step moves the output conv; the default init is neither."""
    recipe = br.BIDiffSRRecipe(model=CPU_TINY, quiet_init=True)
    stage = br.twin_stage(recipe, {})
    unet, lr = stage.model.unet, torch.rand(2, 3, 8, 8)
    cond, t = imresize(lr, 4), torch.full((2,), TINY.timesteps - 1)
    with torch.no_grad():
        assert torch.equal(unet(torch.randn(2, 3, 32, 32), cond, t), torch.zeros(2, 3, 32, 32))
        x = F.pixel_unshuffle(torch.cat([cond, torch.zeros_like(cond)], 1), CPU_TINY.unshuffle)
        y = F.pixel_unshuffle(torch.cat([cond, torch.randn_like(cond)], 1), CPU_TINY.unshuffle)
        assert torch.equal(unet.conv_in(x), unet.conv_in(y))
    opt = torch.optim.Adam(stage.parameters(), lr=1e-3)
    hr = torch.rand(2, 3, 32, 32)
    stage(imresize(hr, 0.25), hr)[0].backward()
    opt.step()
    assert unet.conv_out.weight.abs().sum() > 0
    default = br.twin_stage(replace(recipe, quiet_init=False), {}).model.unet
    assert default.conv_out.weight.abs().sum() > 0


def test_twin_is_full_precision_and_initialises_the_binary_network() -> None:
    """The twin convolves real activations with real weights; the binary network loads its
    state as it is (same parameters) and binarizes it; the twin has nothing to pack."""
    twin = _model(replace(CPU_TINY, binarize=False))
    conv = twin.unet.down[0].conv1
    assert isinstance(conv, BIConv) and not conv.binarize
    x, g = torch.randn(1, 8, 4, 4), torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        expected = conv.taa(F.conv2d(conv.tar(x, g), conv.conv.weight, padding=1), g) + x
        torch.testing.assert_close(conv(x, g), expected)
    stage = br.diffusion_stage(br.BIDiffSRRecipe(model=CPU_TINY),
                               {"twin": {f"model.{k}": v for k, v in twin.state_dict().items()}})
    binary = stage.model
    assert binary.unet.down[0].conv1.binarize
    assert torch.equal(binary.unet.down[0].conv1.conv.weight, conv.conv.weight)
    twin.fuse()
    assert not any(isinstance(m, PackedBinaryConv2d) for m in twin.modules())


def test_cpu_formulation_trains_twin_then_binary_and_exports(tmp_path, train_folder) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_bidiffsr_toml(train_folder).replace(
        "sampling_steps = 2\n", "sampling_steps = 1\nprediction = \"x0\"\nresidual = true\n"
        "spacing = \"trailing\"\nunshuffle = 2\n"))
    out = tmp_path / "run"
    path = run(config, out, torch.device("cpu"), None, False)
    _, _, recipe = load_recipe(config)
    weights = load_stages(out, ["twin", "diffusion"])
    twin = br.twin_model(recipe, weights)
    model = load_model(path)
    assert not twin.cfg.binarize and model.cfg.binarize and model.cfg.unshuffle == 2
    assert _bits_keys(path)[1]
    lr = torch.rand(1, 3, 9, 7)
    assert model(lr).shape == twin(lr).shape == (1, 3, 36, 28)
