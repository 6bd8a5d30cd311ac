"""An adversarial term for an image-space training stage: a PatchGAN discriminator with spectral
norm (Isola et al. 2017; Miyato et al. 2018, the normalisation Real-ESRGAN's discriminator
uses) and the non-saturating loss (Goodfellow et al. 2014, Sec. 3).

The trainer runs one loss and one optimizer step per iteration, so both players share them: the
stage adds ``weight * g_loss + d_loss`` to its loss, where

* ``d_loss = softplus(-D(HR)) + softplus(D(SR.detach()))``: no gradient reaches the generator;
* ``g_loss = softplus(-D'(SR))`` with D' the discriminator on *detached* parameters
  (``torch.func.functional_call``): no gradient reaches the discriminator,

so one backward pass gives each player the gradient of its own loss (``tests/test_adversarial``
checks both). The discriminator trains in its own optimizer group (``lr``); the stage's gradient
clipping spans both players. A pretrained perceptual network (ESRGAN's VGG loss) cannot be
downloaded here, so the image loss stays the stage's own (L1 + gradient L1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class AdversarialConfig:
    weight: float = 0.0  # of g_loss beside the image loss; 0: no adversarial term
    lr: float = 1e-4  # the discriminator's peak lr (the stage's warm-up and cosine decay)
    channels: int = 32  # of the first conv, doubled at each stride-2 conv
    downsamples: int = 3  # stride-2 convs (3: each logit sees a 40 px square)

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and self.lr > 0 and self.channels >= 1
                and self.downsamples >= 1):
            raise ValueError(f"adversarial: weight >= 0, lr > 0, channels and downsamples >= 1; "
                             f"got {self}")


class PatchDiscriminator(nn.Module):
    """Image [B, 3, H, W] in [0, 1] -> logits [B, 1, H / 2^d, W / 2^d] (real > 0): a 3x3 conv,
    ``downsamples`` stride-2 4x4 convs doubling the width, a 3x3 conv to one channel; spectral
    norm on each, LeakyReLU 0.2 between."""

    def __init__(self, cfg: AdversarialConfig):
        super().__init__()
        widths = [cfg.channels * 2**i for i in range(cfg.downsamples + 1)]
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, widths[0], 3, padding=1))]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.LeakyReLU(0.2), spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1))]
        layers += [nn.LeakyReLU(0.2), spectral_norm(nn.Conv2d(widths[-1], 1, 3, padding=1))]
        self.body = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.body(image * 2 - 1)


class Adversarial(nn.Module):
    """The discriminator and the two players' losses on one batch."""

    def __init__(self, cfg: AdversarialConfig):
        super().__init__()
        self.cfg = cfg
        self.discriminator = PatchDiscriminator(cfg)

    def losses(self, sr: Tensor, hr: Tensor) -> tuple[Tensor, Tensor]:
        """(g_loss, d_loss), each a mean over the logit map, with the gradients split as the
        module docstring says."""
        d = self.discriminator
        d_loss = F.softplus(-d(hr)).mean() + F.softplus(d(sr.detach())).mean()
        frozen = {name: p.detach() for name, p in d.named_parameters()}
        g_loss = F.softplus(-functional_call(d, frozen, (sr,))).mean()
        return g_loss, d_loss
