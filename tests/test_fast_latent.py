"""The fast latent stack (issue 17): the LR-grid encoder, the light decoder, the unshuffled UNet,
models built on them, the autoencoder stage that trains a decoder for a kept encoder, a tiny
run through every stage with exact resume, and the fast configs' cost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastdiffsr.methods.edgesdsr.model import EdgeSDSR, EdgeSDSRConfig
from fastdiffsr.methods.yonos.model import YONOS, LREncoderConfig
from fastdiffsr.nn.autoencoder import AutoencoderConfig, DecoderConfig
from fastdiffsr.nn.light import LightDecoder, LRGridEncoder
from fastdiffsr.nn.unet import UNet, UNetConfig
from fastdiffsr.train.checkpoints import load_stages
from fastdiffsr.train.recipes import edgesdsr as er
from fastdiffsr.train.recipes import latent
from fastdiffsr.train.run import load_recipe, run
from fastdiffsr.upscaler import measure_flops, upscale_tensor
from fastdiffsr.zoo import load_model, save_model

from .conftest import assert_seed_decides, assert_tiles_get_their_noise_crop, perturbed_unet_model

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY_AE = AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4,
                            attention_mid=False, decoder=DecoderConfig("light", 8, 1))
FAST = EdgeSDSRConfig(
    autoencoder=TINY_AE,
    unet=UNetConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                    attention_levels=(1,), heads=2, groups=4, unshuffle=2),
    lr_encoder=LREncoderConfig("lr_grid", 8, 1),
)


@pytest.mark.parametrize(("scale", "f", "side"), [(4, 4, 8), (2, 4, 4), (8, 4, 16), (4, 8, 4)])
def test_lr_grid_encoder_reaches_the_latent_grid(scale: int, f: int, side: int) -> None:
    """LR [1, 3, 8, 8] -> [1, C, 8 s/f, 8 s/f]: shuffled up (s > f), unshuffled (s < f)."""
    encoder = LRGridEncoder(8, 1, scale, f, 5)
    assert encoder(torch.rand(1, 3, 8, 8)).shape == (1, 5, side, side)


def test_lr_grid_encoder_rejects_scales_that_do_not_divide() -> None:
    with pytest.raises(ValueError, match="one must divide the other"):
        LRGridEncoder(8, 1, 3, 4, 5)


def test_light_decoder_upsamples_by_f_and_narrows() -> None:
    decoder = LightDecoder(16, 1, 4, 4)
    assert decoder(torch.randn(2, 4, 6, 5)).shape == (2, 3, 24, 20)
    widths = [m.out_channels for m in decoder.up if isinstance(m, torch.nn.Conv2d)]
    assert widths == [32, 16]  # 16 -> 8 channels at 2x, 8 -> 4 at 4x
    with pytest.raises(ValueError, match="divisible by f"):
        LightDecoder(6, 1, 4, 4)


def test_unshuffled_unet_runs_its_levels_at_half_the_side() -> None:
    cfg = UNetConfig(in_channels=4, out_channels=2, base_channels=8, channel_mults=(1, 2),
                     blocks_per_level=1, attention_levels=(1,), heads=2, groups=4, unshuffle=2)
    unet = UNet(cfg)
    assert cfg.downsample_factor == 4 and unet.conv_in.in_channels == 16
    seen = []
    unet.down[0].blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert unet(torch.randn(1, 4, 8, 12), torch.tensor([3])).shape == (1, 2, 8, 12)
    assert seen == [(1, 8, 4, 6)]
    with pytest.raises(ValueError):
        unet(torch.randn(1, 4, 6, 12), torch.tensor([3]))


def test_model_with_the_lr_grid_encoder_has_no_hr_encoder(tmp_path) -> None:
    model = perturbed_unet_model(lambda: EdgeSDSR(FAST))
    assert not any(k.startswith(("autoencoder.encoder.", "autoencoder.quant_conv."))
                   for k in model.state_dict())
    lr = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(model.lr_latent(lr), model.lr_encoder(lr))
    with pytest.raises(RuntimeError, match="decoder alone"):
        model.encode(torch.rand(1, 3, 64, 64))
    loaded = load_model(save_model(model, tmp_path / "fast.safetensors"))
    assert loaded.cfg == FAST
    assert torch.equal(upscale_tensor(model, lr), upscale_tensor(loaded, lr))
    assert_seed_decides(model)
    assert_tiles_get_their_noise_crop(model)


def test_old_model_configs_default_to_the_paper_encoder_and_full_decoder() -> None:
    """Model files written before these switches existed load as they were built."""
    model = YONOS(replace(FAST, lr_encoder=LREncoderConfig(),
                          autoencoder=replace(TINY_AE, decoder=DecoderConfig())))
    assert hasattr(model.autoencoder, "encoder") and not hasattr(model, "lr_encoder")
    assert type(model.autoencoder.decoder).__name__ == "Decoder"


def _encoder_file(tmp_path: Path) -> Path:
    """An autoencoder stage file with the full decoder (as ae-f4c16), latent std 0.5."""
    torch.manual_seed(1)
    full = replace(FAST, autoencoder=replace(TINY_AE, decoder=DecoderConfig()))
    state = latent.AutoencoderStage(full, 1e-6, 0.5).state_dict()
    state["latent_std"] = torch.tensor(0.5)
    path = tmp_path / "ae.safetensors"
    save_file(state, path)
    return path


def test_autoencoder_stage_trains_a_decoder_and_the_lr_encoder_for_a_kept_encoder(
        tmp_path) -> None:
    path = _encoder_file(tmp_path)
    recipe = er.EdgeSDSRRecipe(model=FAST, autoencoder_from=str(path), train_encoder=False)
    stage = latent.autoencoder_stage(recipe, {}).train()
    kept = load_file(path)
    assert torch.equal(stage.autoencoder.encoder.conv_in.weight,
                       kept["autoencoder.encoder.conv_in.weight"])
    hr = torch.rand(2, 3, 32, 32)
    lr = torch.rand(2, 3, 8, 8)
    loss, logs = stage(lr, hr)
    loss.backward()
    assert set(logs) == {"rec", "kl", "lr_latent"}
    assert float(stage.latent_std) == 0.5  # the kept encoder's scale, not re-estimated
    z_hr = stage.autoencoder.encode(hr * 2 - 1).mean / 0.5
    torch.testing.assert_close(logs["lr_latent"],
                               torch.nn.functional.mse_loss(stage.lr_encoder(lr), z_hr))
    assert all(p.grad is None for p in stage.autoencoder.encoder.parameters())
    assert all(p.grad is not None for p in stage.autoencoder.decoder.parameters())
    assert all(p.grad is not None for p in stage.lr_encoder.parameters())
    with pytest.raises(ValueError, match="needs autoencoder_from"):
        er.EdgeSDSRRecipe(model=FAST, train_encoder=False)


def _fast_toml(path: Path, data: Path, method: str, extra: str = "") -> Path:
    stage = ("iterations = 3\nbatch_size = 2\nlr_patch = 8\nwarmup = 1\nval_every = 3\n"
             f"checkpoint_every = 1\nlog_every = 1\nworkers = 0\nholdout = 2\ndata = \"{data}\"\n")
    tables = "".join(f"[{s.name}]\n{stage}" for s in latent.STAGES)
    path.write_text(
        f'method = "{method}"\nname = "fast-tiny"\ndecoder_trains_unet = true\n{extra}'
        "[model]\nscale = 4\n"
        '[model.lr_encoder]\nkind = "lr_grid"\nchannels = 8\nblocks = 1\n'
        "[model.autoencoder]\nbase_channels = 8\nchannel_mults = [1, 2, 2]\ngroups = 4\n"
        'attention_mid = false\n[model.autoencoder.decoder]\nkind = "light"\nchannels = 8\n'
        "blocks = 1\n[model.unet]\nunshuffle = 2\nbase_channels = 8\nchannel_mults = [1, 2]\n"
        "blocks_per_level = 1\nattention_levels = [1]\nheads = 2\ngroups = 4\n" + tables)
    return path


def _ckpt(out: Path, stage: str) -> dict:
    return torch.load(out / stage / "last.ckpt", weights_only=True)


def test_fast_edgesdsr_trains_resumes_exactly_and_exports(tmp_path, train_folder) -> None:
    config = _fast_toml(tmp_path / "edge.toml", train_folder, "edgesdsr", "lr_encoder_warmup = 1\n")
    whole, split = tmp_path / "whole", tmp_path / "split"
    path = run(config, whole, CPU, None, False)
    for stage in ("autoencoder", "teacher_x2", "student_x4", "decoder"):
        if stage != "autoencoder":
            run(config, split, CPU, stage, False, stop_at=2)
        run(config, split, CPU, stage, stage != "autoencoder")
        a, b = _ckpt(whole, stage), _ckpt(split, stage)
        for key in ("model", "ema"):
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), (stage, key)
    _, _, recipe = load_recipe(config)
    weights = load_stages(whole, ["autoencoder", "teacher_x2", "student_x4"])
    # the teacher encodes as the paper (it has the HR encoder); the student has the LR-grid
    # encoder from the autoencoder stage and the teacher's UNet as its start
    teacher = latent._model(recipe, weights, 2, "teacher_x2")
    assert teacher.cfg.lr_encoder.kind == "autoencoder" and not hasattr(teacher, "lr_encoder")
    start = latent._model(recipe, weights, 4, "teacher_x2")
    assert torch.equal(start.unet.conv_in.weight, teacher.unet.conv_in.weight)
    assert torch.equal(start.lr_encoder.conv_in.weight,
                       weights["autoencoder"]["lr_encoder.conv_in.weight"])
    # joint: the LR encoder trains in the student stage and end to end in the decoder stage
    student = latent.stage_model(recipe, weights, "student_x4")
    model = load_model(path)
    assert not torch.equal(student.lr_encoder.conv_in.weight, start.lr_encoder.conv_in.weight)
    assert not torch.equal(model.lr_encoder.conv_in.weight, student.lr_encoder.conv_in.weight)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_fast_yonos_keeps_its_lr_encoder_frozen(tmp_path, train_folder) -> None:
    config = _fast_toml(tmp_path / "yonos.toml", train_folder, "yonos")
    out = tmp_path / "run"
    model = load_model(run(config, out, CPU, None, False))
    ae = load_file(out / "autoencoder" / "model.safetensors")
    assert torch.equal(model.lr_encoder.conv_in.weight, ae["lr_encoder.conv_in.weight"])
    assert not torch.equal(model.autoencoder.decoder.conv_in.weight,
                           ae["autoencoder.decoder.conv_in.weight"])


def _configured(method: str) -> YONOS:
    _, _, recipe = load_recipe(ROOT / "configs" / method / "fast.toml")
    return (EdgeSDSR if method == "edgesdsr" else YONOS)(recipe.model).eval()


@pytest.mark.parametrize("method", ["edgesdsr", "yonos"])
def test_fast_configs_cost_at_most_12_gflops_per_128_to_512(method: str) -> None:
    """Issue 17's budget: encoder + UNet + decoder for one 128 px LR tile <= 12 GFLOPs (2 per
    multiply-add; rdsr-x4: 7.6)."""
    model = _configured(method)
    assert model.cfg.lr_encoder.kind == "lr_grid"
    assert model.cfg.autoencoder.decoder.kind == "light"
    flops = measure_flops(model, lambda: upscale_tensor(model, torch.rand(1, 3, 128, 128)))
    assert flops <= 12e9


def test_fast_configs_share_one_latent_space() -> None:
    """Both fast configs load the committed ae-f4c16-light whole (its autoencoder stage runs 0
    iterations): ae-f4c16's encoder, so ae-f4c16's latent space, with the light decoder and the
    LR-grid encoder trained for it."""
    _, _, edge = load_recipe(ROOT / "configs" / "edgesdsr" / "fast.toml")
    _, _, yonos = load_recipe(ROOT / "configs" / "yonos" / "fast.toml")
    assert edge.model.autoencoder == yonos.model.autoencoder
    assert edge.model.lr_encoder == yonos.model.lr_encoder
    assert edge.autoencoder.iterations == yonos.autoencoder.iterations == 0
    assert (ROOT / edge.autoencoder_from).resolve() == (ROOT / yonos.autoencoder_from).resolve()
    light = load_file(ROOT / edge.autoencoder_from)
    full = load_file(ROOT / "src" / "fastdiffsr" / "weights" / "components" /
                     "ae-f4c16.safetensors")
    encoder = [k for k in full if k.startswith(("autoencoder.encoder.", "latent_std"))]
    assert encoder and all(torch.equal(light[k], full[k]) for k in encoder)
    stage = latent.AutoencoderStage(edge.model, 1e-6, 0.5)
    stage.load_state_dict(light)  # strict: the file is the whole stage


@pytest.mark.parametrize("suffix", [".onnx", ".pte"])
def test_the_fast_stack_exports_with_any_tile_side_and_equals_pytorch(tmp_path, suffix) -> None:
    """No bicubic resize inside: the graph takes tiles of any side, so the exported file
    tiles an image exactly as PyTorch does (a static side would pad every small image up to
    ``max_tile`` and change what GroupNorm and attention see)."""
    pytest.importorskip("onnxruntime" if suffix == ".onnx" else "executorch")
    from fastdiffsr.backends.executorch import export_pte
    from fastdiffsr.backends.onnx import export_onnx
    from fastdiffsr.upscaler import UpscaleOptions

    model = perturbed_unet_model(lambda: EdgeSDSR(replace(FAST, max_tile=64)))
    export = export_onnx if suffix == ".onnx" else export_pte
    exported = load_model(str(export(model, tmp_path / f"m{suffix}", 16)))
    assert exported.static_side == 0
    for shape in ((1, 3, 24, 40), (1, 3, 100, 72)):  # one tile; 3 x 2 tiles of 64
        lr, opts = torch.rand(shape), UpscaleOptions(seed=3)
        want = upscale_tensor(model, lr, opts)
        assert (upscale_tensor(exported, lr, opts) - want).abs().max() < 1e-4


def test_the_fast_stack_exports_int8_calibrated_on_crops_of_any_side(tmp_path) -> None:
    """Calibration crops whose sides the model's size rule does not allow (a training image
    smaller than the crop side) are cropped to allowed sides, not fed as they are (which broke
    a concat in the UNet). ONNX Runtime only: ExecuTorch's int8 program of this stack leaves a
    per-channel dequantize outside the XNNPACK delegate (see benchmarks/results/deploy.md)."""
    pytest.importorskip("onnxruntime")
    from fastdiffsr.backends.onnx import export_onnx
    from fastdiffsr.upscaler import UpscaleOptions

    model = perturbed_unet_model(lambda: EdgeSDSR(replace(FAST, max_tile=64)))
    assert model.multiple_of > 1
    crops = [torch.rand(1, 3, side, side + 3) for side in (30, 21, 16)]
    path = export_onnx(model, tmp_path / "m.onnx", 16, "int8", calibration=crops)
    lr, opts = torch.rand(1, 3, 24, 40), UpscaleOptions(seed=3)
    out, want = upscale_tensor(load_model(str(path)), lr, opts), upscale_tensor(model, lr, opts)
    assert out.shape == want.shape and (out - want).abs().mean() < 0.05
