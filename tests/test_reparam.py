"""RepConv: explicit branches, the online-fused kernel and kernel() are one function."""

from __future__ import annotations

import pytest
import torch

from fastdiffsr.nn.reparam import RepBranches, RepConv

BRANCHES = [RepBranches(), RepBranches(expand=2), RepBranches(conv1x1=False, edges=False),
            RepBranches(identity=False, expand=1, edges=True)]


def _conv(branches: RepBranches, c_in: int = 6, c_out: int = 6) -> RepConv:
    torch.manual_seed(0)
    m = RepConv(c_in, c_out, branches)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@pytest.mark.parametrize("branches", BRANCHES)
def test_branches_equal_fused_kernel(branches: RepBranches) -> None:
    m = _conv(branches)
    x = torch.randn(2, 6, 13, 9)
    m.explicit = True
    a = m(x)
    m.explicit = False
    b = m(x)
    assert (a - b).abs().max() < 1e-4
    w, bias = m.kernel()
    assert w.shape == (6, 6, 3, 3) and bias.shape == (6,)


@pytest.mark.parametrize("branches", BRANCHES)
def test_gradients_match(branches: RepBranches) -> None:
    x = torch.randn(2, 6, 10, 10)
    grads = []
    for explicit in (True, False):
        m = _conv(branches)
        m.explicit = explicit
        m(x).square().sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for g_explicit, g_online in zip(*grads, strict=True):
        assert torch.allclose(g_explicit, g_online, rtol=1e-3, atol=1e-3)


def test_identity_needs_equal_channels() -> None:
    m = _conv(RepBranches(), c_in=3, c_out=6)
    x = torch.randn(1, 3, 8, 8)
    m.explicit = True
    a = m(x)
    m.explicit = False
    assert (a - m(x)).abs().max() < 1e-4


@pytest.mark.parametrize("branches", BRANCHES)
@pytest.mark.parametrize("c_in", [3, 6])
def test_zero_makes_a_zero_kernel_that_still_trains(branches: RepBranches, c_in: int) -> None:
    m = _conv(branches, c_in=c_in).zero_()
    w, b = m.kernel()
    assert w.abs().max() == 0 and b.abs().max() == 0
    x = torch.randn(2, c_in, 8, 8)
    for explicit in (True, False):
        m.explicit = explicit
        assert m(x).abs().max() < 1e-6
    torch.optim.SGD(m.parameters(), lr=0.1).zero_grad()
    (m(x) - torch.randn(2, 6, 8, 8)).square().mean().backward()
    with torch.no_grad():
        for p in m.parameters():
            p -= 0.1 * p.grad
    assert m.kernel()[0].abs().max() > 0  # one step moves it off zero
