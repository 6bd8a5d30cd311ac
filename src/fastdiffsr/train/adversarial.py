"""An adversarial term for an image-space training stage: a PatchGAN discriminator with spectral
norm (Isola et al. 2017; Miyato et al. 2018, the normalisation Real-ESRGAN's discriminator
uses) and the non-saturating loss (Goodfellow et al. 2014, Sec. 3).

The trainer runs one loss and one optimizer step per iteration, so both players share them: the
stage adds ``weight * g_loss + feature_weight * fm_loss + d_loss`` to its loss, where

* ``d_loss = softplus(-D(HR)) + softplus(D(SR.detach()))``: no gradient reaches the generator;
* ``g_loss = softplus(-D'(SR))`` with D' the discriminator on *detached* parameters
  (``torch.func.functional_call``): no gradient reaches the discriminator;
* ``fm_loss = mean_k L1(D'_k(SR), D'_k(HR))`` over D's hidden layers k: pix2pixHD's feature
  matching (Wang et al. 2018, Eq. 4), a perceptual loss on the pair learned by D; it makes the
  output match the original's features where the non-saturating term alone only asks for
  whatever D calls real (the first fine-tune drew a fixed 4 px grid),

so one backward pass gives each player the gradient of its own loss (``tests/test_adversarial``
checks both). The discriminator trains in its own optimizer group (``lr``); the stage's gradient
clipping spans both players. A pretrained perceptual network (ESRGAN's VGG loss) cannot be
downloaded here, so the image loss stays the stage's own (L1 + gradient L1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class AdversarialConfig:
    # of g_loss and fm_loss beside the image loss; both 0: no adversarial term
    weight: float = 0.0
    feature_weight: float = 0.0
    lr: float = 1e-4  # the discriminator's peak lr (the stage's warm-up and cosine decay)
    channels: int = 32  # of the first conv, doubled at each stride-2 conv
    downsamples: int = 3  # stride-2 convs (3: each logit sees a 40 px square)
    # the light decoder's sub-pixel convs (before each pixel shuffle: the only layers that give
    # a pixel's phase within a latent cell its own weights) keep the weights they start with,
    # so the fine-tune cannot learn a fixed pattern repeating with every latent cell
    frozen_upsampling: bool = False

    @property
    def on(self) -> bool:
        return self.weight > 0 or self.feature_weight > 0

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and self.feature_weight >= 0 and self.lr > 0
                and self.channels >= 1 and self.downsamples >= 1):
            raise ValueError(f"adversarial: weight and feature_weight >= 0, lr > 0, channels "
                             f"and downsamples >= 1; got {self}")


class PatchDiscriminator(nn.Module):
    """Image [B, 3, H, W] in [0, 1] -> logits [B, 1, H / 2^d, W / 2^d] (real > 0): a 3x3 conv,
    ``downsamples`` stride-2 4x4 convs doubling the width, a 3x3 conv to one channel; spectral
    norm on each, LeakyReLU 0.2 between. With ``features``: (each LeakyReLU's output, logits)."""

    def __init__(self, cfg: AdversarialConfig):
        super().__init__()
        widths = [cfg.channels * 2**i for i in range(cfg.downsamples + 1)]
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, widths[0], 3, padding=1))]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [nn.LeakyReLU(0.2), spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1))]
        layers += [nn.LeakyReLU(0.2), spectral_norm(nn.Conv2d(widths[-1], 1, 3, padding=1))]
        self.body = nn.Sequential(*layers)

    def forward(self, image: Tensor, features: bool = False
                ) -> Tensor | tuple[list[Tensor], Tensor]:
        x, hidden = image * 2 - 1, []
        for layer in self.body:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                hidden.append(x)
        return (hidden, x) if features else x


class AdversarialLosses(NamedTuple):
    generator: Tensor  # g_loss
    features: Tensor  # fm_loss (0 when feature_weight is 0: not computed)
    discriminator: Tensor  # d_loss


class Adversarial(nn.Module):
    """The discriminator and the two players' losses on one batch."""

    def __init__(self, cfg: AdversarialConfig):
        super().__init__()
        self.cfg = cfg
        self.discriminator = PatchDiscriminator(cfg)

    def losses(self, sr: Tensor, hr: Tensor) -> AdversarialLosses:
        """The three losses, each a mean over its maps, with the gradients split as the module
        docstring says."""
        d = self.discriminator
        d_loss = F.softplus(-d(hr)).mean() + F.softplus(d(sr.detach())).mean()
        frozen = {name: p.detach() for name, p in d.named_parameters()}
        matching = self.cfg.feature_weight > 0
        # SR and HR in one call when matching: one spectral-norm estimate for both
        batch = torch.cat([sr, hr]) if matching else sr
        hidden, logits = functional_call(d, frozen, (batch,), {"features": True})
        n = sr.shape[0]
        g_loss = F.softplus(-logits[:n]).mean()
        fm_loss = sr.new_zeros(())
        if matching:
            fm_loss = torch.stack([F.l1_loss(h[:n], h[n:].detach()) for h in hidden]).mean()
        return AdversarialLosses(g_loss, fm_loss, d_loss)

    def total(self, losses: AdversarialLosses) -> Tensor:
        """What the stage adds to its loss."""
        cfg = self.cfg
        return (cfg.weight * losses.generator + cfg.feature_weight * losses.features
                + losses.discriminator)
