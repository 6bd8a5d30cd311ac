"""Edge-SD-SR: the drifted forward process and its DDIM step, the conditioning switches, the LR
encoder's optimizer group, the distillation target, tiny training runs with exact resume, model
files, seeds, tiles (25 for a 512 px LR) and the paper config's size."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fastdiffsr.data.datasets import downscale
from fastdiffsr.diffusion.sampling import ddim_step, ddim_timesteps, q_sample, sample
from fastdiffsr.diffusion.schedules import alphas_cumprod, scaled_linear_betas
from fastdiffsr.methods.edgesdsr.model import EdgeSDSR, EdgeSDSRConfig
from fastdiffsr.nn.autoencoder import AutoencoderConfig, KLAutoencoder
from fastdiffsr.nn.unet import UNetConfig
from fastdiffsr.train.checkpoints import load_stages, substate
from fastdiffsr.train.recipes import edgesdsr as er
from fastdiffsr.train.recipes import latent
from fastdiffsr.train.run import load_recipe, run
from fastdiffsr.train.trainer import TrainConfig, optimizer, param_groups
from fastdiffsr.upscaler import count_params, measure_flops, upscale_tensor
from fastdiffsr.zoo import load_model, save_model

from .conftest import assert_seed_decides, assert_tiles_get_their_noise_crop, perturbed_unet_model
from .test_yonos import tiny_yonos_toml

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY = EdgeSDSRConfig(
    autoencoder=AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4,
                                  attention_mid=False),
    unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                    attention_levels=(1,), heads=2, groups=4),
)
CONCAT = replace(TINY, conditioning="concat")
FORWARD = replace(TINY, conditioning="forward", unet=replace(TINY.unet, in_channels=4))
ABAR = alphas_cumprod(scaled_linear_betas(1000))


def _model(cfg: EdgeSDSRConfig = TINY) -> EdgeSDSR:
    return perturbed_unet_model(lambda: EdgeSDSR(cfg))


# ----------------------------------------------------------------- the drifted process


def test_forward_drift_values() -> None:
    """z_t = sqrt(abar) z_hr + (1 - sqrt(abar)) z_lr + sqrt(1 - abar) eps, elementwise."""
    x0, d, eps = torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([0.5])
    got = q_sample(x0, 0.25, eps, drift=d)
    assert torch.allclose(got, torch.tensor([0.5 * 2 + 0.5 * -1 + math.sqrt(0.75) * 0.5]))
    assert torch.equal(q_sample(x0, 1.0, eps, drift=d), x0)  # t = 0: the HR latent
    assert torch.allclose(q_sample(x0, 0.0, eps, drift=d), d + eps)  # abar = 0: LR + noise
    x0, d, eps = torch.randn(3, 2, 4, 4, dtype=torch.float64).unbind(0)
    a = torch.tensor([0.9, 0.1], dtype=torch.float64)  # batched abar
    assert torch.allclose(q_sample(x0, a, eps, drift=d), d + q_sample(x0 - d, a, eps))


def _trajectory() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))


def test_drifted_ddim_step_with_a_perfect_predictor() -> None:
    """One step to abar_prev = 1 returns x0 exactly; to any abar_prev it lands on the same
    trajectory, q(x0, abar_prev, eps) drifted; eps-prediction agrees."""
    x0, d, eps = _trajectory()
    x_t = q_sample(x0, ABAR[999], eps, drift=d)
    assert torch.equal(ddim_step(x_t, x0, ABAR[999], 1.0, "x0", drift=d), x0)
    x_prev = ddim_step(x_t, x0, ABAR[999], ABAR[499], "x0", drift=d)
    assert torch.allclose(x_prev, q_sample(x0, ABAR[499], eps, drift=d), atol=1e-12)
    assert torch.allclose(ddim_step(x_t, eps, ABAR[999], ABAR[499], "eps", drift=d), x_prev,
                          atol=1e-12)
    # drift 0 is the plain step
    assert torch.allclose(ddim_step(x_t, x0, ABAR[999], ABAR[499], "x0", drift=0 * d),
                          ddim_step(x_t, x0, ABAR[999], ABAR[499], "x0"), atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_drifted_ddim_sampling_with_a_perfect_predictor(steps: int) -> None:
    """N trailing steps from x_T = q(x0, T - 1, eps) drifted: every visited state is on the
    trajectory and the end is x0 (exactly for x0-prediction)."""
    x0, d, eps = _trajectory()
    timesteps = ddim_timesteps(1000, steps, "trailing")
    x_T = q_sample(x0, ABAR[999], eps, drift=d)
    seen = []

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(torch.allclose(x, q_sample(x0, ABAR[t[0]], eps, drift=d), atol=1e-10))
        return x0

    assert torch.equal(sample(oracle, x_T, ABAR, timesteps, "x0", drift=d), x0)
    assert seen == [True] * steps
    out = sample(lambda x, t: eps, x_T, ABAR, timesteps, "eps", drift=d)
    assert torch.allclose(out, x0, atol=1e-10)


# ----------------------------------------------------------------- the model's switches


@pytest.mark.parametrize("cfg", [TINY, CONCAT, FORWARD], ids=["both", "concat", "forward"])
def test_conditioning_sets_the_unet_input_and_the_start(cfg: EdgeSDSRConfig) -> None:
    """both / concat: the UNet sees cat(z_t, z_lr); forward: z_t alone. both / forward start from
    z_lr + sqrt(1 - abar_{T-1}) noise, concat from the noise; N steps are N UNet calls."""
    model = _model(cfg)
    z_lr, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    inputs, times = [], []
    forward = model.unet.forward
    model.unet.forward = lambda x, t: (inputs.append(x), times.append(t.tolist()),
                                       forward(x, t))[2]
    with torch.no_grad():
        model.sample_latent(z_lr, noise, 1)
    (x,) = inputs
    assert x.shape[1] == (4 if cfg.conditioning == "forward" else 8)
    if cfg.conditioning != "forward":
        assert torch.equal(x[:, 4:], z_lr)
    start = noise if cfg.conditioning == "concat" else z_lr + (1 - model.abar[999]).sqrt() * noise
    assert torch.allclose(x[:, :4], start, atol=1e-6)
    times.clear()
    with torch.no_grad():
        model.sample_latent(z_lr, noise, 3)
    assert times == [[999], [666], [332]]


def test_bad_switches_are_errors() -> None:
    with pytest.raises(ValueError, match="z_t \\(C channels\\)"):
        EdgeSDSR(EdgeSDSRConfig(conditioning="forward"))  # the default UNet takes 2C
    with pytest.raises(ValueError, match="conditioning"):
        EdgeSDSRConfig(conditioning="backward")
    with pytest.raises(ValueError, match="lr_encoder"):
        er.EdgeSDSRRecipe(lr_encoder="frozen")
    with pytest.raises(ValueError, match="autoencoder_from"):
        er.EdgeSDSRRecipe(autoencoder=TrainConfig(iterations=0))


# ----------------------------------------------------------------- training stages


def _teacher_stage(recipe: er.EdgeSDSRRecipe) -> latent.DenoiserStage:
    """The x2 teacher stage of ``recipe`` from a random autoencoder stage (latent std 0.5)."""
    ae = latent.AutoencoderStage(recipe.model, 1e-6, 0.5).state_dict()
    ae["latent_std"] = torch.tensor(0.5)
    return latent.teacher_stage(recipe, {"autoencoder": ae})


def test_lr_encoder_has_its_own_lr_and_warmup_and_the_hr_encoder_no_grads() -> None:
    recipe = er.EdgeSDSRRecipe(model=TINY, lr_encoder_lr=1e-4, lr_encoder_warmup=4)
    stage = _teacher_stage(recipe)
    assert stage.model.scale == 2 and isinstance(stage.model, EdgeSDSR)
    # the LR encoder starts as the HR encoder: same latents, same latent scale (1 / 0.5)
    hr = torch.rand(1, 3, 16, 16)
    assert stage.model.cfg.autoencoder.scaling_factor == 2.0
    torch.testing.assert_close(stage.hr_latent(hr), stage.model.encode(hr))
    unet_group, encoder_group = param_groups(stage)
    encoder = [*stage.model.autoencoder.encoder.parameters(),
               *stage.model.autoencoder.quant_conv.parameters()]
    assert encoder_group.params == encoder
    assert unet_group.params == list(stage.model.unet.parameters())
    opt, sched = optimizer([unet_group, encoder_group],
                           TrainConfig(lr=1e-3, warmup=2, iterations=10))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 / 2, 1e-4 / 4])
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-4 * 2 / 4])
    loss, _ = stage(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16))
    loss.backward()
    assert all(p.grad is None for p in stage.hr_autoencoder.parameters())
    assert all(p.grad is None for p in stage.model.autoencoder.decoder.parameters())
    assert all(p.grad is not None for p in encoder + unet_group.params)
    shared = _teacher_stage(er.EdgeSDSRRecipe(model=TINY, lr_encoder="shared"))
    assert shared.hr_autoencoder is None
    assert [g.params for g in param_groups(shared)] == [list(shared.model.unet.parameters())]


def test_param_groups_must_cover_the_trainable_parameters() -> None:
    stage = _teacher_stage(er.EdgeSDSRRecipe(model=TINY))
    stage.model.autoencoder.decoder.requires_grad_(True)
    with pytest.raises(ValueError, match="exactly once"):
        param_groups(stage)


def test_distillation_target_is_the_teacher_on_its_own_process() -> None:
    """Teacher and student share z_hr, t and eps; each drifts toward its own LR latent."""
    hr_autoencoder = KLAutoencoder(TINY.autoencoder)
    teacher = _model(replace(TINY, scale=2))  # a teacher unlike the student
    stage = latent.DistillStage(EdgeSDSR(TINY), teacher, hr_autoencoder, (1e-4, 4))
    hr = torch.rand(2, 3, 32, 32)
    lr = downscale(hr, 4)
    torch.manual_seed(5)
    loss, _ = stage(lr, hr)
    torch.manual_seed(5)
    z0 = stage.hr_autoencoder.encode_latent(hr * 2 - 1)
    t, eps = latent.timesteps_and_noise(z0, 1000)
    student = stage.model
    with torch.no_grad():
        z2, z4 = teacher.lr_latent(downscale(hr, 2)), student.lr_latent(lr)
        target = teacher.predict_x0(q_sample(z0, ABAR[t], eps, z2), t, z2)
        pred = student.predict_x0(q_sample(z0, ABAR[t], eps, z4), t, z4)
    assert torch.allclose(loss, torch.nn.functional.mse_loss(pred, target))


def _tiny_config(path: Path, data: Path, extra: str = "") -> Path:
    text = tiny_yonos_toml(data).replace("iterations = 2\n", "iterations = 3\n").replace(
        'method = "yonos"\nname = "yonos-tiny"\n',
        f'method = "edgesdsr"\nname = "edgesdsr-tiny"\nlr_encoder_warmup = 2\n{extra}')
    path.write_text(text)
    return path


def _ckpt(out: Path, stage: str) -> dict:
    return torch.load(out / stage / "last.ckpt", weights_only=True)


def test_stages_train_resume_exactly_and_export(tmp_path, train_folder) -> None:
    config = _tiny_config(tmp_path / "tiny.toml", train_folder, "decoder_trains_unet = true\n")
    whole, split = tmp_path / "whole", tmp_path / "split"
    path = run(config, whole, CPU, None, False)
    assert run(config, whole, CPU, "direct_x4", False) is None
    # exact resume of a joint stage (two optimizer groups)
    run(config, split, CPU, "autoencoder", False)
    assert run(config, split, CPU, "teacher_x2", False, stop_at=2) is None
    run(config, split, CPU, "teacher_x2", True)
    a, b = _ckpt(whole, "teacher_x2"), _ckpt(split, "teacher_x2")
    assert len(a["optimizer"]["param_groups"]) == 2
    for key in ("model", "ema"):
        assert all(torch.allclose(a[key][k], b[key][k], atol=1e-6, rtol=0) for k in a[key])
    # the model file: LR encoder, UNet and decoder, all three fine-tuned by the decoder stage
    # with decoder_trains_unet (the LR encoder because it trains: "joint"); no HR encoder
    _, _, recipe = load_recipe(config)
    model = load_model(path)
    weights = load_stages(whole, ["autoencoder", "student_x4"])
    assert model.method == "edgesdsr"
    assert model.cfg == latent.latent_config(recipe, weights["autoencoder"])
    student = latent.stage_model(recipe, weights, "student_x4")
    start = load_file(whole / "autoencoder" / "model.safetensors")
    assert not torch.equal(model.autoencoder.encoder.conv_in.weight,
                           start["autoencoder.encoder.conv_in.weight"])
    assert not torch.equal(model.autoencoder.encoder.conv_in.weight,
                           student.autoencoder.encoder.conv_in.weight)
    assert not torch.equal(model.autoencoder.decoder.conv_out.weight,
                           student.autoencoder.decoder.conv_out.weight)
    assert not torch.equal(model.unet.conv_in.weight, student.unet.conv_in.weight)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_autoencoder_from_another_run(tmp_path, train_folder) -> None:
    """iterations = 0 takes the file as it is (latent scale included)."""
    source = _tiny_config(tmp_path / "source.toml", train_folder)
    run(source, tmp_path / "source", CPU, "autoencoder", False)
    weights = tmp_path / "source" / "autoencoder" / "model.safetensors"
    config = _tiny_config(tmp_path / "reuse.toml", train_folder,
                          f'autoencoder_from = "{weights}"\n')
    text = config.read_text().replace("[autoencoder]\niterations = 3",
                                      "[autoencoder]\niterations = 0")
    config.write_text(text)
    run(config, tmp_path / "reuse", CPU, "autoencoder", False)
    a, b = load_file(weights), load_file(tmp_path / "reuse" / "autoencoder" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_x4_configs_share_the_committed_autoencoder() -> None:
    """The x4 config's ``autoencoder_from`` is the committed file, and it fits the autoencoder
    tables of both x4 configs exactly (same latent space)."""
    _, _, edge = load_recipe(ROOT / "configs" / "edgesdsr" / "x4.toml")
    _, _, yonos = load_recipe(ROOT / "configs" / "yonos" / "x4.toml")
    assert edge.model.autoencoder == yonos.model.autoencoder
    state = load_file(ROOT / edge.autoencoder_from)
    assert float(state.pop("latent_std")) > 0
    ae = KLAutoencoder(edge.model.autoencoder)
    ae.load_state_dict(substate(state, "autoencoder."))


# ----------------------------------------------------------------- inference


def test_model_file_round_trip(tmp_path) -> None:
    model, lr = _model(FORWARD), torch.rand(1, 3, 16, 16)
    loaded = load_model(save_model(model, tmp_path / "edge.safetensors"))
    assert isinstance(loaded, EdgeSDSR) and loaded.cfg == FORWARD
    assert torch.equal(upscale_tensor(model, lr), upscale_tensor(loaded, lr))


def test_seeds_and_tiles_sharing_the_image_noise() -> None:
    """Forward drift included: the seed decides the output, and tiles crop one noise field."""
    model = _model()
    assert_seed_decides(model)
    assert_tiles_get_their_noise_crop(model)


def _configured(name: str) -> EdgeSDSR:
    """The model of configs/edgesdsr/<name>.toml, on the meta device (no weights)."""
    _, _, recipe = load_recipe(ROOT / "configs" / "edgesdsr" / f"{name}.toml")
    with torch.device("meta"):
        return EdgeSDSR(recipe.model)


@pytest.mark.parametrize("make", [_model, lambda: _configured("x4"), lambda: _configured("paper")],
                         ids=["tiny", "x4", "paper"])
def test_512_lr_is_25_evaluations_of_128_px_tiles(make) -> None:
    """Defaults: 128 px tiles at stride 96 (overlap 32), 4 per batch: 5 x 5 = 25 evaluations."""
    model = make()
    tiles, calls = [], []

    def spy(x, sampling_steps=None, seed=0):
        def fn(batch: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
            calls.append(batch.shape[0])
            tiles.extend(batch.unbind(0))
            return torch.nn.functional.interpolate(batch, scale_factor=4.0)
        return fn

    model.prepare = spy
    lr = torch.rand(1, 3, 512, 512)
    out = upscale_tensor(model, lr)
    assert out.shape == (1, 3, 2048, 2048)
    assert len(tiles) == 25 and max(calls) == 4
    starts = [(y, x) for y in range(0, 385, 96) for x in range(0, 385, 96)]
    for tile, (y, x) in zip(tiles, starts, strict=True):
        assert torch.equal(tile, lr[0, :, y : y + 128, x : x + 128])


def test_paper_config_counts() -> None:
    """~169M parameters (UNet + LR encoder + decoder, 5%), ~142G multiply-adds per 128->512
    evaluation (10%; measure_flops counts 2 FLOPs per multiply-add)."""
    model = _configured("paper")
    assert abs(count_params(model) / 169e6 - 1) < 0.05
    lr = torch.rand(1, 3, 128, 128, device="meta")
    noise = torch.randn(model.latent_shape(lr), device="meta")
    macs = measure_flops(model, lambda: model.super_resolve(lr, noise, 1)) / 2
    assert abs(macs / 142e9 - 1) < 0.10
