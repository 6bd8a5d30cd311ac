"""The compiled XNOR + popcount kernel (issue 20): equal to the float simulation, exactly, for
every binary layer shape of the paper and x4 configs; the whole model within float rounding;
the fallback when it cannot be built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastdiffsr.methods.bidiffsr.model import BIDiffSR
from fastdiffsr.nn import binary as bn
from fastdiffsr.nn import xnor_kernel
from fastdiffsr.train.run import load_recipe
from fastdiffsr.zoo import available_models, load_model

ROOT = Path(__file__).resolve().parents[1]
needs_kernel = pytest.mark.skipif(xnor_kernel.kernel() is None,
                                  reason="the XNOR kernel could not be built here")


def _packed_model(config: str) -> BIDiffSR:
    _, _, recipe = load_recipe(ROOT / "configs" / "bidiffsr" / f"{config}.toml")
    torch.manual_seed(0)
    model = BIDiffSR(recipe.model).eval()
    model.fuse()
    return model


def _binary_layers(model: BIDiffSR) -> list[bn.PackedBinaryConv2d]:
    return [m for m in model.modules() if isinstance(m, bn.PackedBinaryConv2d)]


@needs_kernel
@pytest.mark.parametrize("config", ["paper", "x4"])
def test_every_binary_layer_equals_the_float_simulation_exactly(config: str) -> None:
    """Each distinct (C_in, C_out, k) of the config on ternary input with exact zeros."""
    layers = {(m.c_in, m.c_out, m.kernel): m for m in _binary_layers(_packed_model(config))}
    assert layers
    for (c_in, _, _), layer in sorted(layers.items()):
        x = torch.randint(-1, 2, (2, c_in, 9, 11), generator=torch.Generator().manual_seed(c_in))
        layer.path = "float"
        expected = layer(x.float())
        layer.path = "kernel"
        assert torch.equal(layer(x.float()), expected), (c_in, layer.c_out, layer.kernel)


@needs_kernel
@pytest.mark.parametrize(("c_in", "c_out", "kernel"), [(1, 3, 3), (5, 8, 3), (16, 9, 3),
                                                       (21, 16, 1), (32, 8, 3), (33, 17, 3),
                                                       (64, 8, 1), (100, 24, 3)])
def test_any_layer_shape_equals_the_float_simulation_exactly(c_in, c_out, kernel) -> None:
    """Random sign bits and scales: several taps per word (C <= 32, a last slot part empty),
    one tap per word, several words with a partial last one, outputs not a multiple of 8;
    planar and channels-last inputs."""
    gen = torch.Generator().manual_seed(c_in * 100 + kernel)
    layer = bn.PackedBinaryConv2d(c_in, c_out, kernel)
    layer.bits.copy_(torch.randint(0, 256, layer.bits.shape, generator=gen, dtype=torch.uint8))
    layer.scale.copy_(torch.rand(c_out, generator=gen) + 0.5)
    x = torch.randint(-1, 2, (2, c_in, 7, 10), generator=gen).float()
    layer.path = "float"
    expected = layer(x)
    layer.path = "kernel"
    assert torch.equal(layer(x), expected)  # planar input, read a channel row at a time
    assert torch.equal(layer(x.contiguous(memory_format=torch.channels_last)), expected)


@needs_kernel
def test_the_portable_build_equals_the_float_simulation_exactly() -> None:
    """The same source without -march=native: the __builtin_popcountll loop, not AVX-512."""
    module = xnor_kernel.build("fastdiffsr_xnor_portable", ["-O2"])
    assert not module.vector_popcount()
    gen = torch.Generator().manual_seed(5)
    for c_in, c_out, kernel in [(5, 8, 3), (32, 12, 3), (100, 24, 3), (64, 8, 1)]:
        layer = bn.PackedBinaryConv2d(c_in, c_out, kernel)
        layer.bits.copy_(torch.randint(0, 256, layer.bits.shape, generator=gen,
                                       dtype=torch.uint8))
        layer.scale.copy_(torch.rand(c_out, generator=gen) + 0.5)
        x = torch.randint(-1, 2, (2, c_in, 6, 9), generator=gen).float()
        layer.path = "float"
        packed = xnor_kernel.pack_weights(layer.bits, c_in, kernel)
        for memory_format in (torch.contiguous_format, torch.channels_last):
            out = module.xnor_conv2d(x.contiguous(memory_format=memory_format), packed,
                                     layer.scale, kernel)
            assert torch.equal(out.permute(0, 3, 1, 2), layer(x)), (c_in, c_out, kernel)


@needs_kernel
@pytest.mark.parametrize("name", [pytest.param(
    "bidiffsr-x4", marks=pytest.mark.skipif("bidiffsr-x4" not in available_models(),
                                            reason="not shipped"))])
def test_shipped_model_through_the_kernel_matches_within_float_rounding(name: str) -> None:
    """The default path on CPU is the kernel; the float path gives the same image to 1e-5."""
    model = load_model(name)
    layers = _binary_layers(model)
    assert layers and all(m.path == "auto" and m.ternary_input for m in layers)
    lr = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        auto = model(lr)
        for m in layers:
            m.path = "float"
        simulated = model(lr)
    assert (auto - simulated).abs().max() < 1e-5


def test_without_the_kernel_one_warning_and_the_float_path(monkeypatch) -> None:
    import torch.utils.cpp_extension

    def broken(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(xnor_kernel, "_state", {})
    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    layer = bn.PackedBinaryConv2d.from_conv(bn.BinaryConv2d(8, 4, 3))
    layer.ternary_input = True
    x = torch.sign(torch.randn(1, 8, 5, 5))
    with pytest.warns(RuntimeWarning, match="could not be built .*Ninja is required"):
        out = layer(x)
    layer.path = "float"
    assert torch.equal(out, layer(x))


@needs_kernel
@pytest.mark.parametrize(("c_in", "c_out", "kernel"), [(32, 32, 3), (48, 96, 3), (21, 21, 1),
                                                       (100, 100, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fused_biconv_equals_the_unfused_layers_exactly(c_in, c_out, kernel, channels_last,
                                                            monkeypatch) -> None:
    """TaR, sign, the binary conv, TaA and the residual in one kernel pass give the float
    simulation's numbers bit for bit, each sample with its own timestep group."""
    gen = torch.Generator().manual_seed(c_in + kernel)
    block = bn.BIConv(c_in, c_out, kernel, groups=3)
    for p in block.parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    block.pack()
    x = torch.randn(2, c_in, 7, 10, generator=gen)
    x[0, :, 1, 2] = -block.tar.shift[2]  # x + shift exactly 0: a zero activation
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.tensor([2, 0])
    calls = []
    fuse = xnor_kernel.biconv
    monkeypatch.setattr(xnor_kernel, "biconv", lambda *a: calls.append(1) or fuse(*a))
    with torch.no_grad():
        fused = block(x, g)
        assert calls == [1]  # the fused pass ran
        block.conv.path = "float"
        unfused = block(x, g)
    assert block.residual == (c_in == c_out)
    assert torch.equal(fused, unfused)
