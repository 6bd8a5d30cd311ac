"""1-bit building blocks of BI-DiffSR (Chen et al., "Binarized Diffusion Model for Image
Super-Resolution", NeurIPS 2024, Sec. 3), following the official code's design.

* ``sign_ste``: sign activation, forward sign(x) (torch.sign: 0 -> 0), backward the ApproxSign
  gradient of Bi-Real Net (Liu et al. 2018, Eq. 4): 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 else.
* ``binarize_weight``: alpha * sign(W) with alpha [C_out] the mean |W| of each output channel
  (XNOR-Net, Rastegari et al. 2016), alpha treated as a constant; the gradient reaches W through
  clamp(W, -1, 1), i.e. unchanged where |W| <= 1 and 0 elsewhere (the official ``HardBinaryConv``).
* ``TaR`` / ``TaA`` (paper Sec. 3.3): a learnable per-channel shift before the sign and an
  RPReLU (ReActNet, Liu et al. 2020) after the conv, each one of K groups picked by the timestep,
  group = floor(t K / T) (T / K consecutive timesteps share a group).
* ``BIConv``: x + TaA(BinaryConv(sign(TaR(x)))) (paper Fig. 3; the residual keeps the
  full-precision information the sign throws away).
* ``CPDown`` / ``CPUp`` (Sec. 3.2, Fig. 4): channel-wise splits / concatenations around
  square BIConvs so every BIConv keeps its residual while the resolution changes by pixel
  (un)shuffle. ``CSFusion`` (Sec. 3.2, Fig. 5): interleave decoder and skip channels, two 1x1
  BIConvs, sum.
* Deployment: ``PackedBinaryConv2d`` stores sign(W) as bits (uint8, 8 per byte, numpy.packbits
  order) and alpha; on the CPU it runs the compiled XNOR + popcount kernel (``xnor_kernel``,
  AVX-512 VPOPCNTDQ where present), elsewhere (or without a compiler) the simulated float
  conv; ``xnor_conv2d`` here is the readable torch reference of the same integer arithmetic.
  All three give the same numbers.

Feature maps are [B, C, H, W]; ``g`` is the timestep group of each sample [B] (long).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * (2 - 2 * x.abs()).clamp(min=0)  # ApproxSign: 2 - 2|x| on (-1, 1)


def sign_ste(x: Tensor) -> Tensor:
    """sign(x) forward, ApproxSign gradient backward (Bi-Real Net, Eq. 4)."""
    return _SignSTE.apply(x)


def weight_scale(w: Tensor) -> Tensor:
    """alpha [C_out] = mean |W| over (C_in, kh, kw) of each output channel."""
    return w.detach().abs().mean(dim=(1, 2, 3))


class _BinarizeWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:
        ctx.save_for_backward(w)
        return weight_scale(w)[:, None, None, None] * torch.sign(w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)  # d clamp(W, -1, 1) / dW


def binarize_weight(w: Tensor) -> Tensor:
    """alpha * sign(W) [C_out, C_in, k, k] forward; clamp straight-through gradient backward."""
    return _BinarizeWeight.apply(w)


def timestep_group(t: Tensor, timesteps: int, groups: int) -> Tensor:
    """Timesteps t [B] in [0, T) -> TaR/TaA group floor(t K / T) [B], clamped to [0, K)."""
    return (t.long() * groups).div(timesteps, rounding_mode="floor").clamp(0, groups - 1)


def _per_sample(table: Tensor, g: Tensor) -> Tensor:
    """Rows of a [K, C] table picked by g [B] -> [B, C, 1, 1]."""
    return table[g][:, :, None, None]


class TaR(nn.Module):
    """Timestep-aware redistribution: x + shift_g, one learnable [C] shift per group."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(groups, channels))

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return x + _per_sample(self.shift, g)


class TaA(nn.Module):
    """Timestep-aware activation: RPReLU_g(x) = PReLU_{a_g}(x + b0_g) + b1_g per group."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.bias_in = nn.Parameter(torch.zeros(groups, channels))
        self.slope = nn.Parameter(torch.full((groups, channels), 0.25))  # nn.PReLU's init
        self.bias_out = nn.Parameter(torch.zeros(groups, channels))

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        y = x + _per_sample(self.bias_in, g)
        y = torch.where(y >= 0, y, _per_sample(self.slope, g) * y)
        return y + _per_sample(self.bias_out, g)


class BinaryConv2d(nn.Module):
    """Conv (no bias, stride 1, 'same' padding) with weights alpha * sign(W), training form;
    ``binarize=False`` convolves with W itself (the full-precision twin, same parameters)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, binarize: bool = True):
        super().__init__()
        self.c_in, self.c_out, self.kernel, self.binarize = c_in, c_out, kernel, binarize
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's init

    def forward(self, x: Tensor) -> Tensor:
        w = binarize_weight(self.weight) if self.binarize else self.weight
        return F.conv2d(x, w, padding=self.kernel // 2)


class PackedBinaryConv2d(nn.Module):
    """The deployed ``BinaryConv2d``: buffers ``bits`` [C_out, ceil(C_in k k / 8)] uint8 (bit set:
    weight +1; sign(0) is stored as +1) and ``scale`` alpha [C_out] float.

    ``path``: "auto" (the compiled kernel on a CPU input when it is built and the input is known
    to be ternary, ``ternary_input``, as a ``BIConv`` sets it; else "float"),
    "float" (float conv with the unpacked +-1 kernel, times alpha: integer sums in float32 are
    exact, so every path agrees), "kernel" (the compiled kernel) or "torch" (``xnor_conv2d``,
    the reference).
    """

    PATHS = ("auto", "float", "kernel", "torch")

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.c_in, self.c_out, self.kernel = c_in, c_out, kernel
        n = c_in * kernel * kernel
        self.register_buffer("bits", torch.zeros(c_out, -(-n // 8), dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(c_out))
        self.path = "auto"
        self.ternary_input = False  # inputs are sign activations in {-1, 0, +1} (BIConv's)
        self._kernel_weights: tuple[int, Tensor] | None = None  # (bits version, packed)

    @classmethod
    def from_conv(cls, conv: BinaryConv2d) -> PackedBinaryConv2d:
        packed = cls(conv.c_in, conv.c_out, conv.kernel).to(conv.weight.device)
        w = conv.weight.detach()
        packed.bits.copy_(pack_bits(w.flatten(1) >= 0))
        packed.scale.copy_(weight_scale(w))
        return packed

    def signs(self) -> Tensor:
        """The +-1 kernel [C_out, C_in, k, k] (float)."""
        n = self.c_in * self.kernel * self.kernel
        b = unpack_bits(self.bits, n).to(self.scale.dtype) * 2 - 1
        return b.view(self.c_out, self.c_in, self.kernel, self.kernel)

    def as_float_conv(self) -> nn.Conv2d:
        """The same convolution with the kernel alpha * sign(W) in float (for graph export,
        which has no bit shifts)."""
        conv = nn.Conv2d(self.c_in, self.c_out, self.kernel, padding=self.kernel // 2,
                         bias=False).to(self.scale.device)
        conv.weight.data.copy_(self.signs() * self.scale[:, None, None, None])
        return conv

    def forward(self, x: Tensor) -> Tensor:
        if self.path == "torch":
            return xnor_conv2d(x, self.bits, self.scale, self.kernel)
        if self.uses_kernel(x):
            from . import xnor_kernel

            return xnor_kernel.xnor_conv2d(x, self.kernel_weights(), self.scale,
                                           self.kernel).to(x.dtype)
        y = F.conv2d(x, self.signs(), padding=self.kernel // 2)
        return y * self.scale[:, None, None]

    def uses_kernel(self, x: Tensor) -> bool:
        """Whether ``forward(x)`` runs the compiled kernel (``path``, see the class)."""
        if self.path not in self.PATHS:
            raise ValueError(f"path must be one of {self.PATHS}, got {self.path!r}")
        return self.path == "kernel" or (self.path == "auto" and self._kernel_runs(x))

    def _kernel_runs(self, x: Tensor) -> bool:
        """Ternary CPU input, not being traced (export keeps float convs), and the kernel is
        built."""
        if (not self.ternary_input or x.device.type != "cpu" or torch.compiler.is_compiling()
                or torch.jit.is_tracing()):
            return False
        from . import xnor_kernel

        return xnor_kernel.kernel() is not None

    def kernel_weights(self) -> Tensor:
        """The kernel's weight layout, rebuilt when ``bits`` changes (e.g. a state dict load)."""
        version = self.bits._version
        if self._kernel_weights is None or self._kernel_weights[0] != version:
            from . import xnor_kernel

            packed = xnor_kernel.pack_weights(self.bits, self.c_in, self.kernel)
            self._kernel_weights = (version, packed)
        return self._kernel_weights[1]


class BIConv(nn.Module):
    """[B, C_in, H, W] -> [B, C_out, H, W]: TaR -> sign -> binary conv -> TaA (+ x if C_in ==
    C_out; in BI-DiffSR every BIConv is square). ``binarize=False``: the full-precision twin,
    TaR -> conv -> TaA with real activations and weights and the same parameters, so a binary
    BIConv can start from a trained twin."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int, binarize: bool = True):
        super().__init__()
        self.binarize = binarize
        self.tar = TaR(c_in, groups)
        self.conv: BinaryConv2d | PackedBinaryConv2d = BinaryConv2d(c_in, c_out, kernel,
                                                                     binarize)
        self.taa = TaA(c_out, groups)
        self.residual = c_in == c_out

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        if (isinstance(self.conv, PackedBinaryConv2d) and x.dtype == torch.float32
                and not torch.is_grad_enabled() and self.conv.uses_kernel(x)):
            # the same arithmetic in one compiled pass (no autograd through it)
            from . import xnor_kernel

            taa = (self.taa.bias_in[g], self.taa.slope[g], self.taa.bias_out[g])
            return xnor_kernel.biconv(x, self.conv.kernel_weights(), self.conv.scale,
                                      self.conv.kernel, self.tar.shift[g], taa, self.residual)
        a = self.tar(x, g)
        y = self.taa(self.conv(sign_ste(a) if self.binarize else a), g)
        return y + x if self.residual else y

    def pack(self) -> None:
        """Replace the float weights by their packed signs and scales (idempotent; the twin
        has nothing to pack)."""
        if self.binarize and isinstance(self.conv, BinaryConv2d):
            self.conv = PackedBinaryConv2d.from_conv(self.conv)
            self.conv.ternary_input = True  # forward feeds it sign_ste(...)


class FPConv(nn.Conv2d):
    """A full-precision conv ('same' padding, bias) with BIConv's call signature (g unused)."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, g: Tensor | None = None) -> Tensor:
        del g
        return super().forward(x)


class CPDown(nn.Module):
    """Consistent-pixel downsampling: [B, C, H, W] -> [B, 2C, H/2, W/2].

    Two BIConv(C/2 -> C/2) on the channel halves, summed, then PixelUnshuffle(2).
    """

    def __init__(self, channels: int, groups: int, binarize: bool = True):
        super().__init__()
        self.conv1 = BIConv(channels // 2, channels // 2, 3, groups, binarize)
        self.conv2 = BIConv(channels // 2, channels // 2, 3, groups, binarize)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return F.pixel_unshuffle(self.conv1(a, g) + self.conv2(b, g), 2)


class CPUp(nn.Module):
    """Consistent-pixel upsampling: [B, C, H, W] -> [B, C/2, 2H, 2W].

    Two BIConv(C -> C) on the same input, concatenated (2C), then PixelShuffle(2).
    """

    def __init__(self, channels: int, groups: int, binarize: bool = True):
        super().__init__()
        self.conv1 = BIConv(channels, channels, 3, groups, binarize)
        self.conv2 = BIConv(channels, channels, 3, groups, binarize)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        return F.pixel_shuffle(torch.cat([self.conv1(x, g), self.conv2(x, g)], dim=1), 2)


def interleave_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 2C, H, W] = cat(u, v) -> (cat(u[odd], v[even]), cat(u[even], v[odd])), each [B, C, H, W].

    Each output mixes half of the decoder channels u with half of the skip channels v.
    """
    u, v = x.chunk(2, dim=1)
    return torch.cat([u[:, 1::2], v[:, 0::2]], 1), torch.cat([u[:, 0::2], v[:, 1::2]], 1)


class CSFusion(nn.Module):
    """Channel-shuffle fusion: cat(decoder, skip) [B, 2C, H, W] -> [B, C, H, W].

    conv1(cat(u[odd], v[even])) + conv2(cat(u[even], v[odd])) with 1x1 BIConvs, or (the
    official ``CS_Fusion_FP`` at the full-precision levels) 1x1 convs with bias.
    """

    def __init__(self, channels: int, groups: int, binary: bool = True, binarize: bool = True):
        super().__init__()
        if channels % 2:
            raise ValueError(f"CS-Fusion needs an even channel count, got {channels}")
        c = channels
        self.conv1 = BIConv(c, c, 1, groups, binarize) if binary else FPConv(c, c, 1)
        self.conv2 = BIConv(c, c, 1, groups, binarize) if binary else FPConv(c, c, 1)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        a, b = interleave_halves(x)
        return self.conv1(a, g) + self.conv2(b, g)


# --- bits: packing and the XNOR + popcount convolution ------------------------------------

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def pack_bits(b: Tensor) -> Tensor:
    """bool [..., N] -> uint8 [..., ceil(N / 8)], first element in the top bit (numpy.packbits)."""
    n = b.shape[-1]
    x = F.pad(b.to(torch.uint8), (0, -n % 8)).unflatten(-1, (-1, 8))
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=b.device)
    return (x * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, n: int) -> Tensor:
    """uint8 [..., M] -> bool [..., n] (n <= 8 M), the inverse of ``pack_bits``."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    return ((packed[..., None] >> shifts) & 1).flatten(-2)[..., :n].bool()


def _words(packed: Tensor) -> Tensor:
    """uint8 [..., M] -> int64 [..., ceil(M / 8)] (zero-padded bytes; same layout both sides)."""
    m = packed.shape[-1]
    return F.pad(packed, (0, -m % 8)).contiguous().view(torch.int64)


def popcount64(x: Tensor) -> Tensor:
    """Set bits of each int64 word (SWAR, Hacker's Delight Fig. 5-2); works on signed words."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


def xnor_conv2d(x: Tensor, bits: Tensor, scale: Tensor, kernel: int, chunk: int = 1 << 22
                ) -> Tensor:
    """Binary conv by XNOR + popcount: x [B, C, H, W] with values in {-1, 0, +1}, packed
    weights ``bits`` [O, ceil(C k k / 8)], alpha [O] -> [B, O, H, W] ('same' padding).

    Per output pixel, im2col gives N = C k k activations a; with s (sign bits, a > 0) and
    m (mask bits, a != 0: zero padding and exact zeros contribute nothing),
    dot(a, w) = 2 popcount(XNOR(s, w) & m) - popcount(m), exact in integers.
    ``chunk`` bounds the words of the [pixels, O, words] intermediate.
    """
    b, _, h, w = x.shape
    cols = F.unfold(x, kernel, padding=kernel // 2).transpose(1, 2).reshape(b * h * w, -1)
    s, m = _words(pack_bits(cols > 0)), _words(pack_bits(cols != 0))  # [P, W]
    wt = _words(bits)  # [O, W]
    per = max(1, chunk // (wt.numel()))
    dots = []
    for s_i, m_i in zip(s.split(per), m.split(per), strict=True):
        match = popcount64(~(s_i[:, None] ^ wt[None]) & m_i[:, None]).sum(-1)  # [p, O]
        dots.append(2 * match - popcount64(m_i).sum(-1, keepdim=True))
    out = torch.cat(dots).to(scale.dtype) * scale  # [P, O]
    return out.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


# --- size: binary and full-precision parts ----------------------------------------------


@contextmanager
def float_path(model: nn.Module) -> Iterator[None]:
    """Run ``model``'s packed binary convs as float convs on the unpacked +-1 kernel (the same
    results, bit for bit) for the duration: what torch's flop counter can see, where the
    compiled kernel is an opaque op it counts as 0."""
    packed = [m for m in model.modules() if isinstance(m, PackedBinaryConv2d)]
    paths = [m.path for m in packed]
    for m in packed:
        m.path = "float"
    try:
        yield
    finally:
        for m, path in zip(packed, paths, strict=True):
            m.path = path


@dataclass(frozen=True)
class BinaryComplexity:
    """Parameters and multiply-adds of one call, split into binary-conv and full-precision."""

    binary_params: int
    fp_params: int
    binary_macs: int
    fp_macs: int

    @property
    def params(self) -> float:
        """The paper's size: binary / 32 + FP (a 1-bit weight is 1/32 of a float32)."""
        return self.binary_params / 32 + self.fp_params

    @property
    def ops(self) -> float:
        """The paper's OPs: binary / 64 + FP multiply-adds (a 64-bit XNOR-popcount does 64)."""
        return self.binary_macs / 64 + self.fp_macs


GROUP_NORM_OPS = 5  # per element: mean, variance, normalise, scale, shift (fvcore's count)


@torch.no_grad()
def binary_complexity(model: nn.Module, run: Callable[[], object]) -> BinaryComplexity:
    """Count ``model``'s parameters and the operations of ``run()`` (one forward).

    OPs are multiply-adds (MACs), as the BI-DiffSR paper and BNN papers (Bi-Real Net,
    ReActNet) count them, not 2 FLOPs per multiply-add. Binary: every ``BinaryConv2d`` /
    ``PackedBinaryConv2d`` (weights C_out C_in k^2; C_in k^2 MACs per output element). FP: the
    other parameters; the MACs ``torch.utils.flop_counter`` sees (convs, linears, matmuls;
    attention runs with SDPA's math backend, whose matmuls it sees: it has no formula for the CPU
    flash kernel) minus the binary ones, plus ``GROUP_NORM_OPS`` per GroupNorm element. Other
    element-wise ops (activations, TaR / TaA, residual adds) are not counted.
    """
    from ..upscaler import measure_flops

    binary = [m for m in model.modules() if isinstance(m, BinaryConv2d | PackedBinaryConv2d)]
    weights = {id(m.weight) for m in binary if isinstance(m, BinaryConv2d)}
    binary_params = sum(m.c_out * m.c_in * m.kernel**2 for m in binary)
    fp_params = sum(p.numel() for p in model.parameters() if id(p) not in weights)
    count = {"binary": 0, "norm": 0}

    def hook(m: nn.Module, _: object, out: Tensor) -> None:
        if isinstance(m, nn.GroupNorm):
            count["norm"] += GROUP_NORM_OPS * out.numel()
        else:
            count["binary"] += out.numel() * m.c_in * m.kernel**2

    counted = (BinaryConv2d, PackedBinaryConv2d, nn.GroupNorm)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    try:
        flops = measure_flops(model, run)
    finally:
        for h in handles:
            h.remove()
    fp_macs = flops // 2 - count["binary"] + count["norm"]
    return BinaryComplexity(binary_params, fp_params, count["binary"], fp_macs)
