"""1-bit blocks (nn/binary.py): straight-through gradients, timestep groups, CP-Down / CP-Up /
CS-Fusion, bit packing, XNOR + popcount == the simulated conv, and the size counter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastdiffsr.nn import binary as bn


def test_sign_forward_and_approxsign_gradient() -> None:
    x = torch.tensor([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.999, 1.0, 2.0],
                     requires_grad=True)
    y = bn.sign_ste(x)
    assert torch.equal(y, torch.sign(x.detach()))  # sign(0) = 0, as torch.sign
    y.sum().backward()
    # 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere (Bi-Real Net, Eq. 4)
    expected = torch.tensor([0.0, 0.0, 1.0, 1.5, 2.0, 1.5, 1.0, 0.002, 0.0, 0.0])
    assert torch.allclose(x.grad, expected, atol=1e-6)


def test_approxsign_gradient_is_that_of_the_piecewise_quadratic() -> None:
    """The surrogate Bi-Real Net differentiates: -1 | x^2 + 2x | -x^2 + 2x | 1."""
    x = (torch.rand(1000) * 4 - 2).requires_grad_(True)
    bn.sign_ste(x).backward(torch.ones_like(x))
    ref = x.detach().clone().requires_grad_(True)
    surrogate = torch.where(ref < -1, -torch.ones_like(ref),
                            torch.where(ref < 0, ref * ref + 2 * ref,
                                        torch.where(ref < 1, -ref * ref + 2 * ref,
                                                    torch.ones_like(ref))))
    surrogate.sum().backward()
    assert torch.allclose(x.grad, ref.grad, atol=1e-6)


def test_binary_weight_scale_and_clamp_ste() -> None:
    torch.manual_seed(0)
    w = (torch.rand(3, 2, 3, 3) * 1.8 - 0.9).requires_grad_(True)
    with torch.no_grad():
        w[0, 0, 0, 0], w[1, 1, 2, 2] = 1.7, -2.5  # outside [-1, 1]: no gradient
    wb = bn.binarize_weight(w)
    alpha = w.detach().abs().mean(dim=(1, 2, 3))
    assert torch.allclose(wb, alpha.view(3, 1, 1, 1) * torch.sign(w.detach()))
    assert torch.allclose(wb.abs().amax(dim=(1, 2, 3)), alpha)
    upstream = torch.randn_like(w)
    wb.backward(upstream)
    inside = (w.detach().abs() <= 1).float()
    assert inside.sum() == w.numel() - 2
    assert torch.equal(w.grad, upstream * inside)  # alpha is a constant: no extra terms


def test_timestep_groups_of_t_over_k_steps() -> None:
    t = torch.tensor([0, 399, 400, 799, 800, 1599, 1600, 1999, 2500, -3])
    assert bn.timestep_group(t, 2000, 5).tolist() == [0, 0, 1, 1, 2, 3, 4, 4, 4, 0]


def test_tar_and_taa_pick_the_group_of_each_sample() -> None:
    tar, taa = bn.TaR(3, 5), bn.TaA(3, 5)
    with torch.no_grad():
        tar.shift.copy_(torch.arange(5.0)[:, None].expand(5, 3))
        taa.bias_in.copy_(torch.randn(5, 3))
        taa.slope.copy_(torch.rand(5, 3))
        taa.bias_out.copy_(torch.randn(5, 3))
    x, g = torch.randn(2, 3, 4, 4), torch.tensor([3, 1])
    assert torch.allclose(tar(x, g) - x, torch.tensor([3.0, 1.0]).view(2, 1, 1, 1).expand_as(x))
    out = taa(x, g)
    for i, k in enumerate(g.tolist()):
        prelu = nn.PReLU(3)
        prelu.weight.data.copy_(taa.slope[k])
        ref = prelu(x[i : i + 1] + taa.bias_in[k].view(1, 3, 1, 1)) + taa.bias_out[k].view(
            1, 3, 1, 1)
        assert torch.allclose(out[i : i + 1], ref)


def test_only_the_selected_groups_learn() -> None:
    conv = bn.BIConv(4, 4, 3, 5)
    conv(torch.randn(2, 4, 6, 6), torch.tensor([2, 2])).square().sum().backward()
    for table in (conv.tar.shift.grad, conv.taa.slope.grad, conv.taa.bias_out.grad):
        assert table[2].abs().sum() > 0
        assert table[[0, 1, 3, 4]].abs().sum() == 0


def _randomise(module: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def test_biconv_is_tar_sign_conv_taa_plus_input() -> None:
    conv = _randomise(bn.BIConv(4, 4, 3, 5))
    x, g = torch.randn(2, 4, 6, 6), torch.tensor([0, 4])
    w = conv.conv.weight
    alpha = w.abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    s = torch.sign(x + conv.tar.shift[g][:, :, None, None])
    ref = x + conv.taa(F.conv2d(s, alpha * torch.sign(w), padding=1), g)
    assert torch.allclose(conv(x, g), ref, atol=1e-5)
    assert not bn.BIConv(4, 6, 3, 5).residual


def test_cp_down_and_cp_up() -> None:
    g = torch.tensor([1, 3])
    down = _randomise(bn.CPDown(8, 5))
    x = torch.randn(2, 8, 6, 6)
    y = down(x, g)
    assert y.shape == (2, 16, 3, 3)
    ref = F.pixel_unshuffle(down.conv1(x[:, :4], g) + down.conv2(x[:, 4:], g), 2)
    assert torch.equal(y, ref)
    up = _randomise(bn.CPUp(8, 5))
    y = up(x, g)
    assert y.shape == (2, 4, 12, 12)
    a, b = up.conv1(x, g), up.conv2(x, g)
    # PixelShuffle(2) of cat(a, b): output channel c takes input channels 4c .. 4c + 3
    assert torch.equal(y[:, 0, 0::2, 0::2], a[:, 0])
    assert torch.equal(y[:, 0, 1::2, 1::2], a[:, 3])
    assert torch.equal(y[:, 3, 1::2, 1::2], b[:, 7])


def test_cs_fusion_interleaves_decoder_and_skip_channels() -> None:
    x = torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 2, 2)  # decoder 0..3, skip 4..7
    a, b = bn.interleave_halves(x)
    assert a[0, :, 0, 0].tolist() == [1, 3, 4, 6]
    assert b[0, :, 0, 0].tolist() == [0, 2, 5, 7]
    fusion = _randomise(bn.CSFusion(4, 5))
    g, x = torch.tensor([2]), torch.randn(1, 8, 5, 5)
    assert torch.equal(fusion(x, g), fusion.conv1(*[bn.interleave_halves(x)[0], g])
                       + fusion.conv2(bn.interleave_halves(x)[1], g))
    fp = bn.CSFusion(4, 5, binary=False)
    assert isinstance(fp.conv1, nn.Conv2d) and fp.conv1.kernel_size == (1, 1)
    assert fp.conv1.bias is not None and fp(x, g).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match="even"):
        bn.CSFusion(5, 5)


def test_pack_bits_is_numpy_packbits_and_round_trips() -> None:
    b = torch.rand(5, 37) > 0.5
    packed = bn.pack_bits(b)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 5)
    assert np.array_equal(packed.numpy(), np.packbits(b.numpy(), axis=-1))
    assert torch.equal(bn.unpack_bits(packed, 37), b)


def test_popcount64_on_signed_words() -> None:
    x = torch.randint(-(2**63), 2**63 - 1, (200,), dtype=torch.int64)
    x[:3] = torch.tensor([-1, 0, -(2**63)])
    ref = [bin(v & (2**64 - 1)).count("1") for v in x.tolist()]
    assert bn.popcount64(x).tolist() == ref


def test_packed_conv_matches_training_form() -> None:
    torch.manual_seed(0)
    conv = bn.BinaryConv2d(5, 7, 3)
    packed = bn.PackedBinaryConv2d.from_conv(conv)
    assert packed.bits.shape == (7, 6) and packed.bits.dtype == torch.uint8  # ceil(45 / 8)
    assert torch.equal(packed.signs(), torch.sign(conv.weight.detach()))
    x = torch.sign(torch.randn(2, 5, 9, 8))
    with torch.no_grad():
        assert torch.allclose(packed(x), conv(x), atol=1e-5)


@pytest.mark.parametrize(("c_in", "kernel"), [(5, 3), (16, 3), (13, 1), (64, 1)])
def test_xnor_popcount_equals_simulated_conv(c_in: int, kernel: int) -> None:
    """Ternary inputs (exact zeros included) through both paths of one packed conv."""
    torch.manual_seed(c_in)
    packed = bn.PackedBinaryConv2d.from_conv(bn.BinaryConv2d(c_in, 6, kernel))
    x = torch.randint(-1, 2, (2, c_in, 7, 10)).float()
    packed.path = "float"
    simulated = packed(x)
    packed.path = "torch"
    bitwise = packed(x)
    assert torch.equal(bitwise, simulated)
    small_chunks = bn.xnor_conv2d(x, packed.bits, packed.scale, kernel, chunk=64)
    assert torch.equal(small_chunks, simulated)


def test_complexity_counts_binary_and_full_precision_apart() -> None:
    model = nn.ModuleDict({"bi": bn.BIConv(4, 4, 3, 5), "fp": nn.Conv2d(4, 2, 1),
                           "norm": nn.GroupNorm(2, 4)})
    x, g = torch.randn(1, 4, 8, 8), torch.tensor([0])
    c = bn.binary_complexity(model, lambda: model["fp"](model["norm"](model["bi"](x, g))))
    assert c.binary_params == 4 * 4 * 9
    assert c.fp_params == 5 * 4 + 3 * 5 * 4 + (2 * 4 + 2) + 2 * 4  # TaR, TaA, conv, norm
    assert c.binary_macs == 64 * 4 * 4 * 9
    assert c.fp_macs == 64 * 2 * 4 + bn.GROUP_NORM_OPS * 4 * 64
    assert c.params == c.binary_params / 32 + c.fp_params
    assert c.ops == c.binary_macs / 64 + c.fp_macs
    model["bi"].pack()  # the packed form counts the same
    packed = bn.binary_complexity(model, lambda: model["fp"](model["norm"](model["bi"](x, g))))
    assert packed == c


def test_packed_conv_as_float_conv_is_the_same_convolution() -> None:
    torch.manual_seed(0)
    packed = bn.PackedBinaryConv2d.from_conv(bn.BinaryConv2d(8, 6, 3))
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(packed.as_float_conv()(x), packed(x))
