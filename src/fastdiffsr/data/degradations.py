"""Real-world degradations: Real-ESRGAN's second-order model (Wang et al., ICCVW 2021, Sec. 3)
as a pure function of (HR image, seed), for training pairs made on the fly and for the named,
fixed degradations ``fastdiffsr eval --degradation`` scores.

The chain, twice, then a final step (Real-ESRGAN Fig. 2 / its training config):
blur (isotropic / anisotropic Gaussian, generalized Gaussian, plateau, or a 2-D sinc) ->
resize up / down / keep with area, bilinear or bicubic interpolation -> Gaussian or Poisson
noise, in colour or gray -> JPEG; the second pass may skip its blur; the final step is
[resize to the LR size + sinc] and JPEG in random order, and the LR is rounded to 8 bits.

Libraries: JPEG is Pillow's libjpeg (quality q, 4:2:0 as cameras write it); the resizes and
the blur are torch (``F.interpolate``, a depthwise ``F.conv2d`` with reflect padding); the
random draws are one ``numpy.random.Generator`` per (seed, sample). The blur kernels are
written here from their formulas (Real-ESRGAN Eq. 2-4 and its sinc filter: BasicSR, which
has them, pulls torchvision, which cannot be installed beside this torch), with
``torch.special.bessel_j1`` for the sinc's Bessel function.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..resize import imresize

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
MAX_KERNEL = 21  # every kernel is padded to 21 x 21


@dataclass(frozen=True)
class Stage:
    """One pass of the chain: blur, resize, noise, JPEG (ranges are drawn uniformly)."""

    blur_prob: float = 1.0  # 0: this pass never blurs
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # KERNEL_KINDS
    sinc_prob: float = 0.1  # a sinc kernel instead of the above
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian's shape
    betap: tuple[float, float] = (1.0, 2.0)  # plateau's shape
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5  # else Poisson
    noise_sigma: tuple[float, float] = (1.0, 30.0)  # of 255
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_quality: tuple[float, float] = (30.0, 95.0)


@dataclass(frozen=True)
class Degradation:
    """The whole second-order model; the defaults are Real-ESRGAN x4plus's training ranges."""

    first: Stage = Stage()
    second: Stage = Stage(blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_probs=(0.3, 0.4, 0.3),
                          resize_range=(0.3, 1.2), noise_sigma=(1.0, 25.0),
                          poisson_scale=(0.05, 2.5))
    final_sinc_prob: float = 0.8
    # the plain path instead of the chain: MATLAB bicubic downscale, then the second pass's
    # noise and JPEG (as BSRGAN's shuffled model often draws: a resized photo saved as JPEG),
    # each applied with its own probability (both 0: the clean LR)
    plain_prob: float = 0.0
    plain_noise_prob: float = 1.0
    plain_jpeg_prob: float = 1.0


@cache  # each preset is built once: the named degradations ask for it per sample
def _mild() -> Degradation:
    """Real-ESRGAN's model with every range narrowed toward the clean end (a phone photo
    shared once): no second blur, light noise, JPEG 60-95."""
    stage = Stage(blur_sigma=(0.2, 1.5), resize_probs=(0.1, 0.4, 0.5), resize_range=(0.5, 1.2),
                  noise_sigma=(1.0, 8.0), poisson_scale=(0.05, 0.8), jpeg_quality=(60.0, 95.0))
    return Degradation(stage, replace(stage, blur_prob=0.0), final_sinc_prob=0.3)


@cache
def _photo() -> Degradation:
    """What the first ``rdsr-x4-real`` trained on: the mild chain for half the samples, the
    plain path for the other half (a photo resized and shared once, blurred or not). Measured
    on the held-out images: three quarters plain with noise 1-10 and JPEG 40-95 (4500 + 1000
    iterations) was no better (clean 26.96 / JPEG 60 26.15 / noise 5 26.82 dB against 27.04 /
    26.15 / 26.88)."""
    return replace(_mild(), plain_prob=0.5)


@cache
def _mix() -> Degradation:
    """What ``rdsr-x4-real`` trains on since the photo mix above lost 2 dB on clean Set5 and
    scored below rdsr-x4 on noise 5 (every plain sample had both noise and JPEG, so the model
    smoothed every input as if it were compressed): the mild chain for a fifth of the samples;
    the plain path for the rest, where noise (1-12 of 255) and JPEG (40-95) each apply with
    probability 1/2, so a fifth of the plain samples are the clean LR."""
    mild = _mild()
    second = replace(mild.second, noise_sigma=(1.0, 12.0), jpeg_quality=(40.0, 95.0))
    return replace(mild, second=second, plain_prob=0.8, plain_noise_prob=0.5,
                   plain_jpeg_prob=0.5)


# name -> function (hr [1, 3, H, W] in [0, 1], scale, seed) -> LR [1, 3, H/s, W/s] 8-bit levels;
# the fixed degradations ``fastdiffsr eval --degradation`` applies (seed: the image's index)
def _bicubic_then(op):
    def degrade_named(hr: Tensor, scale: int, seed: int) -> Tensor:
        return op(imresize(hr, 1 / scale, uint8_passes=True), np.random.default_rng(seed))
    return degrade_named


NAMED = {
    "jpeg60": _bicubic_then(lambda lr, rng: jpeg(lr, 60)),
    "noise5": _bicubic_then(lambda lr, rng: _to_8bit(lr + gaussian_noise(lr, 5.0, False, rng))),
    "realesrgan-mild": lambda hr, scale, seed: degrade(hr, scale, seed, _mild()),
    "realesrgan-severe": lambda hr, scale, seed: degrade(hr, scale, seed, Degradation()),
    "realesrgan-photo": lambda hr, scale, seed: degrade(hr, scale, seed, _photo()),
    "photo-mix": lambda hr, scale, seed: degrade(hr, scale, seed, _mix()),
}


def degrade(hr: Tensor, scale: int, seed: int, cfg: Degradation = Degradation()) -> Tensor:
    """LR [1, 3, H/scale, W/scale] in [0, 1] (8-bit levels) from HR [1, 3, H, W] in [0, 1]
    by the second-order model: a pure function of (hr, scale, seed, cfg)."""
    if hr.ndim != 4 or hr.shape[:2] != (1, 3) or min(hr.shape[-2:]) < scale:
        raise ValueError(f"hr must be [1, 3, H, W] with H, W >= scale, got {list(hr.shape)}")
    rng = np.random.default_rng(seed)
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    if cfg.plain_prob > 0 and rng.random() < cfg.plain_prob:
        lr = imresize(hr[..., :h * scale, :w * scale], 1 / scale, uint8_passes=True)
        return _to_8bit(_noise_and_jpeg(lr, cfg.second, rng, cfg.plain_noise_prob,
                                        cfg.plain_jpeg_prob))
    x = _stage(hr.float(), cfg.first, rng, (h * scale, w * scale), 1.0)
    x = _stage(x, cfg.second, rng, (h * scale, w * scale), scale)
    sinc = sinc_kernel(MAX_KERNEL, rng.uniform(math.pi / 3, math.pi))
    use_sinc = rng.random() < cfg.final_sinc_prob
    quality = rng.uniform(*cfg.second.jpeg_quality)
    mode = RESIZE_MODES[rng.integers(3)]

    def resize_and_sinc(t: Tensor) -> Tensor:
        t = resize(t, (h, w), mode)
        return blur(t, sinc) if use_sinc else t

    if rng.random() < 0.5:
        x = jpeg(resize_and_sinc(x), quality)
    else:
        x = resize_and_sinc(jpeg(x, quality))
    return _to_8bit(x)


def _stage(x: Tensor, st: Stage, rng: np.random.Generator, hr_size: tuple[int, int],
           scale: float) -> Tensor:
    """One pass on x; its resize is relative to the HR size / ``scale`` (Real-ESRGAN's second
    pass resizes relative to the LR-to-be: ``scale`` = the model's)."""
    if rng.random() < st.blur_prob:
        x = blur(x, random_kernel(st, rng))
    kind = rng.choice(3, p=st.resize_probs)
    factor = (rng.uniform(1, st.resize_range[1]) if kind == 0 else
              rng.uniform(st.resize_range[0], 1) if kind == 1 else 1.0)
    size = (max(1, round(hr_size[0] / scale * factor)), max(1, round(hr_size[1] / scale * factor)))
    return _noise_and_jpeg(resize(x, size, RESIZE_MODES[rng.integers(3)]), st, rng)


def _noise_and_jpeg(x: Tensor, st: Stage, rng: np.random.Generator, noise_prob: float = 1.0,
                    jpeg_prob: float = 1.0) -> Tensor:
    gray = bool(rng.random() < st.gray_noise_prob)
    if _happens(noise_prob, rng):
        if rng.random() < st.gaussian_noise_prob:
            x = x + gaussian_noise(x, rng.uniform(*st.noise_sigma), gray, rng)
        else:
            x = x + poisson_noise(x, rng.uniform(*st.poisson_scale), gray, rng)
        x = x.clamp(0, 1)
    return jpeg(x, rng.uniform(*st.jpeg_quality)) if _happens(jpeg_prob, rng) else x


def _happens(prob: float, rng: np.random.Generator) -> bool:
    """True with probability ``prob``; prob 1 draws nothing, so the presets written before
    these probabilities existed draw the same sequence (and the same LR) as they did."""
    return prob >= 1 or rng.random() < prob


# ----------------------------------------------------------------------------- kernels


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size) - size // 2
    return np.meshgrid(r, r, indexing="xy")


def _quadratic(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T Sigma^-1 x on a size x size grid, Sigma = R diag(sx^2, sy^2) R^T (Eq. 2)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T)
    xx, yy = _grid(size)
    return inv[0, 0] * xx**2 + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy**2


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                    beta: float = 1.0) -> np.ndarray:
    """(Generalized) Gaussian, exp(-0.5 (x^T Sigma^-1 x)^beta) (Eq. 2-3; beta 1: Gaussian)."""
    k = np.exp(-0.5 * _quadratic(size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                   beta: float) -> np.ndarray:
    """Plateau-shaped, 1 / (1 + (x^T Sigma^-1 x)^beta) (Eq. 4)."""
    k = 1 / (1 + _quadratic(size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Circular low-pass (2-D sinc) with cutoff ``cutoff`` rad/px: cutoff J1(cutoff r) /
    (2 pi r), cutoff^2 / (4 pi) at r = 0; it rings like an over-sharpened or resampled photo."""
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    bessel = torch.special.bessel_j1(torch.from_numpy(cutoff * r)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * bessel / (2 * math.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * math.pi)
    return k / k.sum()


def random_kernel(st: Stage, rng: np.random.Generator) -> np.ndarray:
    """A random blur kernel of odd size 7..21 padded to 21 x 21, float [21, 21] summing to 1."""
    size = int(rng.choice(np.arange(7, MAX_KERNEL + 1, 2)))
    if rng.random() < st.sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5,
                                                                                 math.pi)
        k = sinc_kernel(size, cutoff)
    else:
        kind = KERNEL_KINDS[rng.choice(len(KERNEL_KINDS), p=st.kernel_probs)]
        sx = rng.uniform(*st.blur_sigma)
        sy, theta = (sx, 0.0) if "aniso" not in kind else (rng.uniform(*st.blur_sigma),
                                                            rng.uniform(-math.pi, math.pi))
        if kind.startswith("generalized"):
            k = gaussian_kernel(size, sx, sy, theta, rng.uniform(*st.betag))
        elif kind.startswith("plateau"):
            k = plateau_kernel(size, sx, sy, theta, rng.uniform(*st.betap))
        else:
            k = gaussian_kernel(size, sx, sy, theta)
    pad = (MAX_KERNEL - size) // 2
    return np.pad(k, pad)


# ----------------------------------------------------------------------------- operations


def blur(x: Tensor, kernel: np.ndarray) -> Tensor:
    """Each channel of x [1, C, H, W] convolved with ``kernel`` (reflect padding)."""
    k = torch.as_tensor(kernel, dtype=x.dtype)[None, None].expand(x.shape[1], 1, -1, -1)
    p = kernel.shape[0] // 2
    mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
    return F.conv2d(F.pad(x, (p, p, p, p), mode=mode), k, groups=x.shape[1])


def resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """x [1, C, H, W] to ``size`` by ``mode``: area and bicubic are torch's; bilinear is
    ``_linear`` along each axis, since torch's CPU bilinear rounds some pixels differently with
    the thread count (by up to 2e-7, and a rounding to 8 bits or Poisson noise's count of
    levels can carry that to whole levels), and the LR must be a function of (image, seed)."""
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "bilinear":
        return _linear(_linear(x, size[0], -2), size[1], -1)
    extra = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **extra)


def _linear(x: Tensor, n_out: int, dim: int) -> Tensor:
    """x resampled to ``n_out`` samples along ``dim`` by linear interpolation between pixel
    centres (torch's bilinear with align_corners=False, one axis), in element-wise ops: each
    output element is computed alone, whatever the thread count."""
    n_in = x.shape[dim]
    if n_in == n_out:  # resize() changes the other axis only
        return x
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    shape = [1] * x.ndim
    shape[dim] = n_out
    weight = (src - i0).to(x.dtype).view(shape)  # of i1 (past the last centre i1 = i0)
    a, b = x.index_select(dim, i0), x.index_select(dim, i1)
    return a + (b - a) * weight


def gaussian_noise(x: Tensor, sigma: float, gray: bool, rng: np.random.Generator) -> Tensor:
    """N(0, (sigma/255)^2) per pixel, per channel or (``gray``) the same in every channel."""
    shape = (1, 1 if gray else x.shape[1], *x.shape[-2:])
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) * (sigma / 255)


def poisson_noise(x: Tensor, scale: float, gray: bool, rng: np.random.Generator) -> Tensor:
    """Shot noise as Real-ESRGAN draws it: Poisson(v x) / v - x with v the power of two above
    the image's count of 8-bit levels, times ``scale``; ``gray``: drawn on the luma, shared."""
    img = x.clamp(0, 1)
    if gray:
        img = (img * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    levels = torch.round(img * 255) / 255
    vals = 2 ** math.ceil(math.log2(max(2, len(torch.unique(levels)))))
    noisy = rng.poisson(levels.numpy() * vals).astype(np.float32) / vals
    return (torch.from_numpy(noisy) - levels) * scale


def jpeg(x: Tensor, quality: float) -> Tensor:
    """x [1, 3, H, W] through Pillow's JPEG encoder at ``quality`` and back (8-bit)."""
    arr = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, "JPEG", quality=int(round(quality)))
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1)[None].contiguous()


def _to_8bit(x: Tensor) -> Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255
