"""The adversarial term (train/adversarial.py) and the decoder stage that fine-tunes a model file
with it (``decoder_from``)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fastdiffsr.config import ConfigError
from fastdiffsr.methods.edgesdsr.model import EdgeSDSR
from fastdiffsr.nn.autoencoder import DecoderConfig
from fastdiffsr.train.adversarial import Adversarial, AdversarialConfig
from fastdiffsr.train.checkpoints import load_stages
from fastdiffsr.train.recipes import latent
from fastdiffsr.train.run import load_recipe, run
from fastdiffsr.zoo import load_model

from .test_edgesdsr import CPU, _ckpt, _tiny_config
from .test_fast_latent import FAST, TINY_AE


def test_one_backward_gives_each_player_its_own_gradient() -> None:
    torch.manual_seed(0)
    cfg = AdversarialConfig(weight=0.5, feature_weight=2.0, channels=4, downsamples=2)
    adversarial = Adversarial(cfg).eval()
    d = adversarial.discriminator  # eval: spectral norm's power iteration holds still
    sr = torch.rand(2, 3, 16, 16, requires_grad=True)
    hr = torch.rand(2, 3, 16, 16)
    adversarial.total(adversarial.losses(sr, hr)).backward()
    hidden_hr, _ = d(hr, features=True)
    hidden_sr, logits_sr = d(sr, features=True)
    fm = torch.stack([F.l1_loss(a, b.detach()) for a, b in zip(hidden_sr, hidden_hr,
                                                               strict=True)]).mean()
    own_g = torch.autograd.grad(0.5 * F.softplus(-logits_sr).mean() + 2.0 * fm, sr)[0]
    own_d = torch.autograd.grad(F.softplus(-d(hr)).mean() + F.softplus(d(sr.detach())).mean(),
                                list(d.parameters()))
    assert torch.allclose(sr.grad, own_g, atol=1e-7)
    assert all(torch.allclose(p.grad, g, atol=1e-7)
               for p, g in zip(d.parameters(), own_d, strict=True))
    assert d(hr).shape == (2, 1, 4, 4)
    assert [h.shape[1:] for h in hidden_hr] == [(4, 16, 16), (8, 8, 8), (16, 4, 4)]


def test_feature_matching_is_zero_on_the_original_and_off_by_default() -> None:
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 16, 16)
    on = Adversarial(AdversarialConfig(weight=0.5, feature_weight=1.0, channels=4,
                                       downsamples=2))
    assert on.losses(hr, hr).features == 0
    assert on.losses(torch.rand(2, 3, 16, 16), hr).features > 0
    off = Adversarial(AdversarialConfig(weight=0.5, channels=4, downsamples=2))
    assert off.losses(torch.rand(2, 3, 16, 16), hr).features == 0


def test_frozen_upsampling_keeps_the_light_decoders_subpixel_convs() -> None:
    def trainable(frozen: bool, cfg=FAST) -> dict[str, bool]:
        adversarial = AdversarialConfig(weight=0.1, channels=4, downsamples=2,
                                        frozen_upsampling=frozen)
        stage = latent.DecoderStage(EdgeSDSR(cfg), 0.5, True, False, adversarial)
        return {k: p.requires_grad
                for k, p in stage.model.autoencoder.decoder.named_parameters()}

    frozen, free = trainable(True), trainable(False)
    assert all(free.values())
    assert {k for k, on in frozen.items() if not on} == {k for k in frozen if k.startswith("up.")}
    assert any(k.startswith("up.") for k in frozen)
    standard = replace(FAST, autoencoder=replace(TINY_AE, decoder=DecoderConfig()))
    with pytest.raises(ConfigError, match="light decoder"):
        trainable(True, standard)


def test_bad_adversarial_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="adversarial"):
        AdversarialConfig(weight=-1.0)


def _fine_tune_config(tmp_path, train_folder, start):
    config = _tiny_config(tmp_path / "gan.toml", train_folder,
                          f'decoder_from = "{start}"\ndecoder_trains_unet = true\n'
                          "[adversarial]\nweight = 0.1\nfeature_weight = 1.0\nchannels = 4\n"
                          "downsamples = 2\n")
    text = config.read_text()
    for stage in ("teacher_x2", "student_x4"):
        text = text.replace(f"[{stage}]\niterations = 3", f"[{stage}]\niterations = 0")
    config.write_text(text)
    return config


def test_decoder_stage_fine_tunes_a_model_file_adversarially(tmp_path, train_folder) -> None:
    source = _tiny_config(tmp_path / "source.toml", train_folder, "decoder_trains_unet = true\n")
    start = run(source, tmp_path / "source", CPU, None, False)
    config = _fine_tune_config(tmp_path, train_folder, start)
    whole, split = tmp_path / "whole", tmp_path / "split"
    path = run(config, whole, CPU, None, False)
    # the stage starts as the file
    _, _, recipe = load_recipe(config)
    weights = load_stages(whole, ["autoencoder", "student_x4"])
    stage = latent.decoder_stage(recipe, weights)
    first = load_model(start, deploy=False).state_dict()
    assert all(torch.equal(v, first[k]) for k, v in stage.model.state_dict().items())
    # both players trained, the discriminator in its own group; it is not in the model file
    log = [json.loads(line) for line in (whole / "decoder" / "log.jsonl").read_text().splitlines()]
    assert any("g_adv" in r and "d_adv" in r and r["fm_adv"] > 0 for r in log)
    assert len(_ckpt(whole, "decoder")["optimizer"]["param_groups"]) == 2
    tuned = load_model(path, deploy=False).state_dict()
    assert tuned.keys() == first.keys()
    assert not torch.equal(tuned["unet.conv_in.weight"], first["unet.conv_in.weight"])
    # exact resume (discriminator, its spectral norm's vectors and its optimizer state)
    for earlier in ("autoencoder", "teacher_x2", "student_x4"):
        run(config, split, CPU, earlier, False)
    assert run(config, split, CPU, "decoder", False, stop_at=2) is None
    run(config, split, CPU, "decoder", True)
    a, b = _ckpt(whole, "decoder"), _ckpt(split, "decoder")
    assert any(k.startswith("adversarial.") for k in a["model"])
    for key in ("model", "ema"):
        assert all(torch.allclose(a[key][k], b[key][k], atol=1e-6, rtol=0) for k in a[key])


def test_decoder_from_another_config_is_refused(tmp_path, train_folder) -> None:
    source = _tiny_config(tmp_path / "source.toml", train_folder)
    start = run(source, tmp_path / "source", CPU, None, False)
    config = _fine_tune_config(tmp_path, train_folder, start)
    config.write_text(config.read_text().replace("base_channels = 8\nchannel_mults = [1, 2]",
                                                 "base_channels = 12\nchannel_mults = [1, 2]"))
    with pytest.raises(ConfigError, match="decoder_from"):
        run(config, tmp_path / "run", CPU, None, False)
