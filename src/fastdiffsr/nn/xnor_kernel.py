"""The compiled XNOR + popcount convolution of BI-DiffSR's binary layers (``xnor.cpp``).

Built on first use by torch's C++ extension loader (gcc and ninja; ``-O3 -march=native``, so
the AVX-512 VPOPCNTDQ path is compiled where the CPU has it) into torch's extension cache, and
prebuilt by ``make``. No compiler, no ninja, a failed build: ``kernel()`` is None after one
warning and the binary layers run their float simulation, which gives the same numbers.

Layouts: ``pack_weights`` turns a ``PackedBinaryConv2d``'s ``bits`` [O, ceil(C k k / 8)]
(numpy.packbits order over (c, ky, kx)) into int64 [slots, ceil(C / 64), O rounded up to 8]:
per slot, 64 input channels per word (bit c % 64 of word c // 64), output channels side by
side. A slot is one tap (ky, kx) when C > 32; with C <= 32 channels, up to ``taps_per_slot``
= 64 // C adjacent taps of one kernel row share a word: slot (ky, g) holds taps (ky, g r + j)
at bits j C + c (r = taps_per_slot; the row's last slot may hold fewer, its empty bits masked),
so a narrow layer counts up to r taps per popcount and the kernel reads each slot's
activations as one word.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from .binary import unpack_bits

_SOURCE = Path(__file__).with_name("xnor.cpp")
_state: dict[str, ModuleType | None] = {}


def build(name: str, cflags: list[str]) -> ModuleType:
    """Compile ``xnor.cpp`` as module ``name`` (torch caches it on disk by name and source) with
    ``cflags`` and always ``-fopenmp``, so that its ``at::parallel_for`` uses torch's threads
    (without it: one thread), and ``-ffp-contract=off``, so that the fused epilogue rounds each
    float operation as torch's separate kernels do (no multiply-add fused by the compiler)."""
    from torch.utils.cpp_extension import load

    return load(name=name, sources=[str(_SOURCE)], verbose=False,
                extra_cflags=[*cflags, "-fopenmp", "-ffp-contract=off"])


def kernel() -> ModuleType | None:
    """The compiled module (built once per process, cached on disk by torch), or None."""
    if "module" not in _state:
        try:
            _state["module"] = build("fastdiffsr_xnor", ["-O3", "-march=native"])
        except Exception as e:  # no compiler, no ninja, a compile error: the float path runs
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(f"fastdiffsr: the XNOR kernel could not be built ({first_line}); "
                          "binary layers run their float simulation (same results, slower)",
                          RuntimeWarning, stacklevel=2)
            _state["module"] = None
    return _state["module"]


def taps_per_slot(c_in: int) -> int:
    """How many taps of a kernel row share a 64-bit word: 64 // C for C <= 32, else 1
    (``xnor.cpp`` agrees)."""
    return 64 // c_in if c_in <= 32 else 1


def pack_weights(bits: Tensor, c_in: int, kernel_size: int) -> Tensor:
    """``bits`` [O, ceil(C k k / 8)] uint8 -> int64 [slots, ceil(C / 64), O8] (see above)."""
    c_out, k, per_slot = bits.shape[0], kernel_size, taps_per_slot(c_in)
    words, o8, groups = -(-c_in // 64), -(-c_out // 8) * 8, -(-k // per_slot)
    signs = unpack_bits(bits, c_in * k * k).view(c_out, c_in, k, k)  # bool, W >= 0
    signs = torch.nn.functional.pad(signs.permute(2, 3, 1, 0), (0, o8 - c_out))  # [ky, kx, C, O8]
    # slot (ky, g) holds taps (ky, g per_slot + j) at bits j C + c; kx past k: zero bits
    signs = torch.nn.functional.pad(signs, (0, 0, 0, 0, 0, groups * per_slot - k))
    signs = signs.reshape(k * groups, per_slot * c_in, o8)
    signs = torch.nn.functional.pad(signs, (0, 0, 0, words * 64 - signs.shape[1]))
    shifts = torch.arange(64, dtype=torch.int64, device=bits.device).view(1, 1, 64, 1)
    per_bit = signs.reshape(k * groups, words, 64, o8).to(torch.int64) << shifts
    return per_bit.sum(2)  # bits are disjoint: the sum is the OR (bit 63 wraps to the sign)


def _built() -> ModuleType:
    module = kernel()
    if module is None:
        raise RuntimeError("the XNOR kernel is not available")
    return module


def xnor_conv2d(x: Tensor, packed: Tensor, alpha: Tensor, kernel_size: int) -> Tensor:
    """x [B, C, H, W] in {-1, 0, +1} -> [B, O, H, W] (channels-last memory) with the compiled
    kernel; equal to the float convolution of x with alpha * sign(W)."""
    out = _built().xnor_conv2d(x, packed, alpha, kernel_size)  # [B, H, W, O]
    return out.permute(0, 3, 1, 2)


def biconv(x: Tensor, packed: Tensor, alpha: Tensor, kernel_size: int, shift: Tensor,
           taa: tuple[Tensor, Tensor, Tensor], residual: bool) -> Tensor:
    """BI-DiffSR's whole BIConv in one pass of the compiled kernel: x [B, C, H, W] float,
    TaR's shift [B, C] and TaA's (bias_in, slope, bias_out) [B, O] each (the sample's rows) ->
    TaA(conv(sign(x + shift), alpha sign W)) (+ x) [B, O, H, W] (channels-last memory); each
    float operation rounded as torch rounds it, so it equals the unfused layers."""
    out = _built().xnor_biconv(x, packed, alpha, kernel_size, shift, *taa, residual)
    return out.permute(0, 3, 1, 2)
