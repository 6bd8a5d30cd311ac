"""Multi-branch reparameterizable 3x3 convolution (RepVGG / ECBSR style).

While training, a RepConv is a sum of linear branches on the same input:
3x3 conv, 1x1 conv, identity, 1x1 -> 3x3 (expand-squeeze) and fixed Sobel-x / Sobel-y /
Laplacian edge filters after a 1x1 conv (ECBSR, Zhang et al. 2021, Sec. 3.2). Being linear,
their sum is exactly one 3x3 conv: ``kernel()`` returns it. ``forward`` either runs the branches
one by one (``explicit=True``, the textbook unfused path) or convolves with the summed kernel
(same function, same gradients, one conv of compute: what training uses by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_ranges

_SOBEL_X = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
_LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
_EDGE_MASKS = torch.stack([_SOBEL_X, _SOBEL_X.T, _LAPLACIAN])  # [3, 3, 3]


@dataclass(frozen=True)
class RepBranches:
    conv1x1: bool = True
    identity: bool = True
    expand: int = 0  # width multiplier of the 1x1 -> 3x3 branch; 0 disables it
    edges: bool = True

    RANGES: ClassVar = {"expand": (0, 16)}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


class RepConv(nn.Module):
    """C_in -> C_out 3x3 conv made of several linear branches; ``kernel()`` fuses them."""

    def __init__(self, c_in: int, c_out: int, branches: RepBranches):
        super().__init__()
        self.c_in, self.c_out, self.branches = c_in, c_out, branches
        self.explicit = False
        self.conv3 = nn.Conv2d(c_in, c_out, 3, padding=1)
        if branches.conv1x1:
            self.conv1 = nn.Conv2d(c_in, c_out, 1)
        if branches.expand:
            mid = branches.expand * c_out
            self.expand_a = nn.Conv2d(c_in, mid, 1)
            self.expand_b = nn.Conv2d(mid, c_out, 3)  # applied after border padding of a's output
        if branches.edges:
            self.edge_pre = nn.Conv2d(c_in, 3 * c_out, 1)
            self.edge_scale = nn.Parameter(1e-3 * torch.randn(3 * c_out))
            self.register_buffer("edge_masks", _EDGE_MASKS.clone(), persistent=False)

    def zero_(self) -> RepConv:
        """Make the fused kernel zero (and with it the output), every branch still trainable:
        the last layer of each branch is zeroed, so gradients reach the others once it moves;
        where the identity branch applies, the 3x3 conv starts at minus the identity."""
        last = [self.conv3, getattr(self, "conv1", None), getattr(self, "expand_b", None)]
        with torch.no_grad():
            for conv in filter(None, last):
                conv.weight.zero_()
                conv.bias.zero_()
            if self.branches.edges:
                self.edge_scale.zero_()
            if self.branches.identity and self.c_in == self.c_out:
                w = self.conv3.weight
                w[:, :, 1, 1].sub_(torch.eye(self.c_out, device=w.device, dtype=w.dtype))
        return self

    def forward(self, x: Tensor) -> Tensor:
        if not self.explicit:
            w, b = self.kernel()
            return F.conv2d(x, w, b, padding=1)
        return self._branches(x)

    def _branches(self, x: Tensor) -> Tensor:
        y = self.conv3(x)
        if self.branches.conv1x1:
            y = y + self.conv1(x)
        if self.branches.identity and self.c_in == self.c_out:
            y = y + x
        if self.branches.expand:
            a = self.expand_a(x)
            # pad with the 1x1 conv's bias so the branch equals one 3x3 conv on zero-padded x
            a = F.pad(a - self.expand_a.bias.view(1, -1, 1, 1), (1, 1, 1, 1))
            a = a + self.expand_a.bias.view(1, -1, 1, 1)
            y = y + self.expand_b(a)
        if self.branches.edges:
            # the masks sum to zero, so removing the 1x1 bias before zero padding equals padding
            # with the bias: the branch is then one 3x3 conv on zero-padded x, as kernel() says
            e = F.pad(self.edge_pre(x) - self.edge_pre.bias.view(1, -1, 1, 1), (1, 1, 1, 1))
            w = self._edge_depthwise()
            e = F.conv2d(e, w, groups=3 * self.c_out)  # [B, 3*C_out, H, W]
            y = y + e.view(e.shape[0], 3, self.c_out, *e.shape[2:]).sum(1)
        return y

    def _edge_depthwise(self) -> Tensor:
        """[3*C_out, 1, 3, 3]: channel group g uses fixed mask g, times a learned scale."""
        masks = self.edge_masks.repeat_interleave(self.c_out, dim=0)  # [3*C_out, 3, 3]
        return (masks * self.edge_scale.view(-1, 1, 1)).unsqueeze(1)

    def kernel(self) -> tuple[Tensor, Tensor]:
        """The single equivalent 3x3 conv: weight [C_out, C_in, 3, 3] and bias [C_out]."""
        w, b = self.conv3.weight, self.conv3.bias
        if self.branches.conv1x1:
            w = w + F.pad(self.conv1.weight, (1, 1, 1, 1))
            b = b + self.conv1.bias
        if self.branches.identity and self.c_in == self.c_out:
            eye = torch.eye(self.c_out, device=w.device, dtype=w.dtype)
            w = w + F.pad(eye[:, :, None, None], (1, 1, 1, 1))
        if self.branches.expand:
            wa, ba = self.expand_a.weight[:, :, 0, 0], self.expand_a.bias  # [M, C_in], [M]
            wb, bb = self.expand_b.weight, self.expand_b.bias  # [C_out, M, 3, 3]
            w = w + torch.einsum("omhw,mi->oihw", wb, wa)
            b = b + bb + torch.einsum("omhw,m->o", wb, ba)
        if self.branches.edges:
            pre_w = self.edge_pre.weight[:, :, 0, 0].view(3, self.c_out, self.c_in)
            pre_b = self.edge_pre.bias.view(3, self.c_out)
            dw = self._edge_depthwise().view(3, self.c_out, 3, 3)
            w = w + torch.einsum("goi,gohw->oihw", pre_w, dw)
            b = b + torch.einsum("go,gohw->o", pre_b, dw)
        return w, b
