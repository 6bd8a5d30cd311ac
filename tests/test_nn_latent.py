"""Latent-diffusion networks: KL autoencoder and UNet shapes, posterior maths, gradients, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastdiffsr.nn.autoencoder import SD_VAE, AutoencoderConfig, DiagonalGaussian, KLAutoencoder
from fastdiffsr.nn.layers import sinusoidal_embedding
from fastdiffsr.nn.unet import SD_UNET, UNet, UNetConfig
from fastdiffsr.upscaler import count_params

VAE_F4 = AutoencoderConfig(base_channels=8, channel_mults=(1, 2, 2), groups=4)
VAE_F8 = AutoencoderConfig(base_channels=8, channel_mults=(1, 1, 2, 2), groups=4, latent_channels=3)
TINY_UNET = UNetConfig(
    base_channels=16,
    channel_mults=(1, 2),
    blocks_per_level=1,
    attention_levels=(0, 1),
    heads=2,
    groups=4,
    extra_self_attention=True,
)


def _vae(cfg: AutoencoderConfig) -> KLAutoencoder:
    torch.manual_seed(0)
    return KLAutoencoder(cfg)


def _unet(cfg: UNetConfig = TINY_UNET) -> UNet:
    torch.manual_seed(0)
    return UNet(cfg)


@pytest.mark.parametrize("cfg", [VAE_F4, VAE_F8], ids=["f4", "f8"])
def test_autoencoder_shapes(cfg: AutoencoderConfig) -> None:
    f = cfg.downsample_factor
    assert f == 2 ** (len(cfg.channel_mults) - 1)
    vae = _vae(cfg)
    x = torch.rand(2, 3, 4 * f, 3 * f) * 2 - 1
    posterior = vae.encode(x)
    assert posterior.mean.shape == (2, cfg.latent_channels, 4, 3)
    assert posterior.sample().shape == posterior.mode().shape == posterior.mean.shape
    recon, post = vae(x)
    assert recon.shape == x.shape
    assert post.kl().shape == (2,)


def test_scaled_latent_round_trip() -> None:
    vae = _vae(
        AutoencoderConfig(base_channels=8, channel_mults=(1, 2), groups=4, scaling_factor=0.5)
    )
    x = torch.rand(1, 3, 8, 6) * 2 - 1
    with torch.no_grad():
        z = vae.encode_latent(x)
        assert torch.allclose(z, 0.5 * vae.encode(x).mode())
        assert torch.allclose(vae.decode_latent(z), vae.decode(vae.encode(x).mode()), atol=1e-6)


def test_kl() -> None:
    assert torch.equal(DiagonalGaussian(torch.zeros(3, 8, 2, 2)).kl(), torch.zeros(3))
    params = torch.randn(3, 8, 5, 4, generator=torch.Generator().manual_seed(0))
    kl = DiagonalGaussian(params).kl()
    assert kl.shape == (3,) and bool((kl > 0).all())
    # one latent dim with mean 1, logvar 0: 0.5 * (1 + 1 - 1 - 0)
    one = torch.zeros(1, 2, 1, 1)
    one[0, 0] = 1.0
    assert DiagonalGaussian(one).kl().item() == pytest.approx(0.5)


def test_logvar_clamped() -> None:
    params = torch.cat([torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), -100.0)], dim=1)
    assert DiagonalGaussian(params).logvar.item() == -30.0


def test_sample_reproducible() -> None:
    posterior = DiagonalGaussian(torch.randn(2, 8, 4, 4))
    a = posterior.sample(torch.Generator().manual_seed(7))
    b = posterior.sample(torch.Generator().manual_seed(7))
    c = posterior.sample(torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_autoencoder_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        _vae(VAE_F4).encode(torch.zeros(1, 3, 16, 18))


@pytest.mark.parametrize("size", [(8, 8), (16, 24), (4, 12)])
def test_unet_shapes(size: tuple[int, int]) -> None:
    x = torch.randn(2, TINY_UNET.in_channels, *size)
    with torch.no_grad():
        y = _unet()(x, torch.tensor([0, 999]))
    assert y.shape == (2, TINY_UNET.out_channels, *size)


def test_unet_float_and_long_timesteps_agree() -> None:
    unet, x = _unet(), torch.randn(1, TINY_UNET.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.allclose(unet(x, torch.tensor([10])), unet(x, torch.tensor([10.0])))


def test_unet_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        _unet()(torch.zeros(1, TINY_UNET.in_channels, 8, 7), torch.zeros(1))


def test_time_embedding_changes_output() -> None:
    unet, x = _unet(), torch.randn(2, TINY_UNET.in_channels, 8, 8)
    with torch.no_grad():
        a, b = unet(x, torch.tensor([1, 1])), unet(x, torch.tensor([500, 500]))
    assert (a - b).abs().max() > 1e-4


def test_sinusoidal_embedding() -> None:
    e = sinusoidal_embedding(torch.tensor([0, 3]), 16)
    assert e.shape == (2, 16)
    assert torch.equal(e[0], torch.cat([torch.ones(8), torch.zeros(8)]))  # cos 0, sin 0
    assert e[1, 0].item() == pytest.approx(torch.cos(torch.tensor(3.0)).item())


def _assert_all_grads(model: nn.Module) -> None:
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_unet_gradients_reach_every_parameter() -> None:
    unet = _unet()
    unet(
        torch.randn(2, TINY_UNET.in_channels, 8, 8), torch.tensor([3, 70])
    ).square().mean().backward()
    _assert_all_grads(unet)


def test_autoencoder_gradients_reach_every_parameter() -> None:
    vae = _vae(VAE_F4)
    recon, posterior = vae(
        torch.rand(1, 3, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0)
    )
    (recon.square().mean() + posterior.kl().mean()).backward()
    _assert_all_grads(vae)


def test_sd_vae_size() -> None:
    with torch.device("meta"):
        vae = KLAutoencoder(SD_VAE)
    assert SD_VAE.downsample_factor == 8
    assert count_params(vae) == pytest.approx(83_653_863, rel=0.01)


def test_paper_unet_size() -> None:
    with torch.device("meta"):
        unet = UNet(SD_UNET)
    assert count_params(unet) == pytest.approx(860e6, rel=0.05)
