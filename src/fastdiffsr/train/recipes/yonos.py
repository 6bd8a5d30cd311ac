"""YONOS-SR training (Noroozi et al., ECCV 2024): the stages of ``latent.py`` on a ``YONOS``
model, one frozen encoder for the HR and the LR latents."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import PATH
from ...methods.yonos.model import YONOS, YONOSConfig
from ..adversarial import AdversarialConfig
from ..trainer import TrainConfig
from . import latent
from .latent import Schedule


@dataclass(frozen=True)
class YONOSRecipe:
    model: YONOSConfig = field(default_factory=YONOSConfig)
    autoencoder: TrainConfig = field(default_factory=TrainConfig)
    teacher_x2: TrainConfig = field(default_factory=TrainConfig)
    student_x4: TrainConfig = field(default_factory=TrainConfig)
    decoder: TrainConfig = field(default_factory=TrainConfig)
    direct_x4: TrainConfig = field(default_factory=TrainConfig)
    kl_weight: float = 1e-6
    gradient_weight: float = 0.5
    decoder_trains_unet: bool = False  # the decoder stage also trains the UNet (not the paper's)
    # an autoencoder stage's weights file to start from (with [autoencoder] iterations = 0: as is)
    autoencoder_from: str | None = field(default=None, metadata=PATH)
    # false: the autoencoder stage keeps autoencoder_from's encoder (frozen) and trains a decoder
    train_encoder: bool = True
    # a model file (this method's, same config) the decoder stage starts from instead of the
    # student: fine-tuning a shipped model (then [teacher_x2] and [student_x4] iterations = 0)
    decoder_from: str | None = field(default=None, metadata=PATH)
    # the decoder stage's adversarial term (train/adversarial.py); weight 0: none
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self) -> None:
        if self.autoencoder.iterations == 0 and self.autoencoder_from is None:
            raise ValueError("[autoencoder] iterations = 0 needs autoencoder_from (the file to "
                             "use)")
        if not self.train_encoder and self.autoencoder_from is None:
            raise ValueError("train_encoder = false needs autoencoder_from (the encoder to keep)")

    def new_model(self, cfg: YONOSConfig) -> YONOS:
        return YONOS(cfg)

    def lr_encoder_schedule(self) -> Schedule | None:
        """YONOS-SR's encoder stays frozen in every UNet stage."""
        return None


Recipe = YONOSRecipe
STAGES = latent.STAGES
EXPORT = latent.EXPORT
