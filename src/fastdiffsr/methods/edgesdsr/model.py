"""Edge-SD-SR (Hadji, Noroozi et al., CVPR 2025), the inference model: YONOS-SR's latent stack
(``methods/yonos``) with bidirectional conditioning, one step, 128 px LR tiles.

* Bidirectional conditioning (``conditioning``), our reading of the paper (DESIGN.md): the
  forward process drifts from the HR latent toward the LR latent (``diffusion.sampling``'s
  drift), z_t = sqrt(abar_t) z_hr + (1 - sqrt(abar_t)) z_lr + sqrt(1 - abar_t) eps [B, C, h, w],
  so sampling starts from the LR latent plus noise, x_T = z_lr + sqrt(1 - abar_{T-1}) eps, and
  the DDIM steps carry the drift; and the UNet sees cat(z_t, z_lr) [B, 2C, h, w]. ``"both"`` is
  the method, ``"concat"`` YONOS-SR's conditioning (pure-noise start), ``"forward"`` the drift
  alone (the UNet sees z_t [B, C, h, w], ``unet.in_channels = C``). With ``residual`` (as
  YONOS, x0_hat = z_lr + UNet(...)) the LR latent also reaches the output in every mode: the
  switch sets the process and the UNet's input, not the parameterisation.
* Decoupled encodings: this model's encoder is the LR encoder (z_lr = Enc_lr(bicubic_s(LR))),
  trained with the UNet; the frozen HR encoder that defines z_hr for the decoder lives only in
  the training stages (``train/recipes/latent.py``). The model file holds the LR encoder, the
  UNet and the (fine-tuned) HR decoder.
* Tiles: 128 px LR -> 512 px, overlap 32 (stride 96), YONOS's ``max_tile`` and
  ``tile_overlap``: a 512 px LR image is 5 x 5 = 25 evaluations, blended, 4 per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..yonos.model import YONOS, YONOSConfig

CONDITIONINGS = ("both", "concat", "forward")


@dataclass(frozen=True)
class EdgeSDSRConfig(YONOSConfig):
    conditioning: str = "both"  # one of CONDITIONINGS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, "
                             f"got {self.conditioning!r}")


class EdgeSDSR(YONOS):
    """LR encoder, latent UNet and decoder; ``conditioning`` sets the UNet input and the process."""

    method = "edgesdsr"
    bf16_safe = True  # benchmarks/results/deploy.md: within 0.01 dB of fp32 on every set
    cfg: EdgeSDSRConfig

    def concat_lr(self) -> bool:
        return self.cfg.conditioning != "forward"

    def drift(self, z_lr: Tensor) -> Tensor | None:
        """z_lr for "both" and "forward" (the drifted process), None for "concat"."""
        return None if self.cfg.conditioning == "concat" else z_lr
