"""Edge-SD-SR training (Hadji, Noroozi et al., CVPR 2025) inside YONOS-SR's scale distillation:
the stages of ``latent.py`` on an ``EdgeSDSR`` model (bidirectional conditioning).

Decoupled encodings (``lr_encoder = "joint"``): z_hr comes from a frozen copy of the autoencoder
stage's encoder; the model's own encoder, initialised from it, encodes the LR and trains with
the UNet in ``teacher_x2``, ``student_x4`` and ``direct_x4`` at its own peak lr
``lr_encoder_lr`` and warm-up ``lr_encoder_warmup``. Gradients reach it through z_lr in the
UNet's input, the residual x0 and the drift. ``"shared"``: one frozen encoder, as YONOS-SR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...methods.edgesdsr.model import EdgeSDSR, EdgeSDSRConfig
from . import latent
from .latent import Schedule
from .yonos import YONOSRecipe

LR_ENCODERS = ("joint", "shared")


@dataclass(frozen=True)
class EdgeSDSRRecipe(YONOSRecipe):
    model: EdgeSDSRConfig = field(default_factory=EdgeSDSRConfig)
    lr_encoder: str = "joint"  # one of LR_ENCODERS
    lr_encoder_lr: float = 1e-4  # the LR encoder's peak lr ("joint")
    lr_encoder_warmup: int = 300  # and its warm-up iterations

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr_encoder not in LR_ENCODERS:
            raise ValueError(f"lr_encoder must be one of {LR_ENCODERS}, got {self.lr_encoder!r}")

    def new_model(self, cfg: EdgeSDSRConfig) -> EdgeSDSR:
        return EdgeSDSR(cfg)

    def lr_encoder_schedule(self) -> Schedule | None:
        """"joint": the LR encoder trains at (lr_encoder_lr, lr_encoder_warmup); "shared": no."""
        if self.lr_encoder == "shared":
            return None
        return self.lr_encoder_lr, self.lr_encoder_warmup


Recipe = EdgeSDSRRecipe
STAGES = latent.STAGES
EXPORT = latent.EXPORT
