"""Image reading and writing for super-resolution: 8/16-bit, gray/RGB, optional alpha.

Pillow does the heavy lifting. Pillow reduces 16-bit RGB(A) and gray+alpha PNGs to 8 bits,
so those are decoded (and written) by a small numpy/zlib PNG codec in this module.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageReadError

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ImageReadError",
    "Picture",
    "is_image_file",
    "picture_to_tensor",
    "read_image",
    "tensor_to_pixels",
    "write_image",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_MODES_16 = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> samples per pixel
_ORIENTATION_TAG = 0x0112

# Errors that Pillow, zlib, struct and our own PNG codec raise for bad input.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


@dataclass(frozen=True, eq=False)
class Picture:
    """Decoded image: float32 pixels (H x W x C, C in {1, 3}) and alpha (H x W) in [0, 1]."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
            raise ValueError(f"pixels must be H x W x 1 or H x W x 3, got {pixels.shape}")
        object.__setattr__(self, "pixels", pixels)
        if self.alpha is not None:
            alpha = np.asarray(self.alpha, dtype=np.float32)
            if alpha.ndim == 3 and alpha.shape[2] == 1:
                alpha = alpha[:, :, 0]
            if alpha.shape != pixels.shape[:2]:
                raise ValueError(f"alpha shape {alpha.shape} does not match {pixels.shape[:2]}")
            object.__setattr__(self, "alpha", alpha)
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the suffix is one of SUPPORTED_SUFFIXES (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


# --------------------------------------------------------------------------- PNG codec


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _predict(ftype: np.ndarray | int, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG predictor for filter type(s) `ftype` from left (a), up (b), up-left (c); int16."""
    t = np.asarray(ftype)
    conds = [t == 1, t == 2, t == 3, t == 4]
    return np.select(conds, [a, b, (a + b) >> 1, _paeth(a, b, c)], 0).astype(np.int16)


def _unfilter(rows: np.ndarray, height: int, width: int, bpp: int) -> np.ndarray:
    """Undo PNG filtering of (H, 1 + W*bpp) uint8 rows; returns (H, W*bpp) uint8.

    Each pixel depends on its left, upper and upper-left neighbours, so pixels on one
    anti-diagonal are independent: sweep the H + W - 1 diagonals, vectorised along each.
    """
    ftype = rows[:, 0].astype(np.int16)
    if (ftype > 4).any():
        raise ValueError(f"invalid PNG filter type {int(ftype.max())}")
    if not ftype.any():
        return rows[:, 1:]
    filt = rows[:, 1:].reshape(height, width, bpp).astype(np.int16)
    out = np.zeros((height + 1, width + 1, bpp), np.int16)  # zero row/column = PNG borders
    for d in range(height + width - 1):
        ys = np.arange(max(0, d - width + 1), min(height - 1, d) + 1)
        xs = d - ys
        a, b, c = out[ys + 1, xs], out[ys, xs + 1], out[ys, xs]
        out[ys + 1, xs + 1] = (filt[ys, xs] + _predict(ftype[ys, None], a, b, c)) & 255
    return out[1:, 1:].astype(np.uint8).reshape(height, width * bpp)


def _decode_png16(data: bytes) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode a non-interlaced 16-bit PNG (any colour type but palette).

    Returns (uint16 H x W x C samples, uint16/bool key-transparency alpha or None, EXIF
    orientation). C is 1, 2, 3 or 4 (gray, gray+alpha, RGB, RGBA).
    """
    if not data.startswith(_PNG_SIG):
        raise ValueError("not a PNG file")
    pos, header, idat, trns, orientation = len(_PNG_SIG), None, [], None, 1
    while True:
        if pos + 8 > len(data):
            raise ValueError("PNG is truncated (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            raise ValueError(f"PNG chunk {ctype!r} is truncated")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(ctype + body) != crc:
            raise ValueError(f"PNG chunk {ctype!r} has a bad CRC")
        pos += 12 + length
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"tRNS":
            trns = body
        elif ctype == b"eXIf":
            exif = Image.Exif()
            exif.load(body)
            orientation = int(exif.get(_ORIENTATION_TAG, 1))
        elif ctype == b"IEND":
            break
    if header is None:
        raise ValueError("PNG has no IHDR chunk")
    width, height, depth, color, compression, filter_method, interlace = header
    if depth != 16 or color not in _PNG_CHANNELS or compression or filter_method:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {color})")
    if interlace:
        raise ValueError("interlaced 16-bit colour PNG is not supported")
    limit = Image.MAX_IMAGE_PIXELS
    if width == 0 or height == 0 or (limit and width * height > 2 * limit):
        raise ValueError(f"bad PNG size {width}x{height}")
    channels = _PNG_CHANNELS[color]
    bpp = 2 * channels
    raw = zlib.decompress(b"".join(idat))
    need = height * (1 + width * bpp)
    if len(raw) < need:
        raise ValueError("PNG image data is truncated")
    rows = np.frombuffer(raw, np.uint8, count=need).reshape(height, 1 + width * bpp)
    plain = np.ascontiguousarray(_unfilter(rows, height, width, bpp))
    samples = plain.view(">u2").reshape(height, width, channels).astype(np.uint16)
    key_alpha = None
    if trns is not None and channels in (1, 3) and len(trns) == bpp:
        key = np.frombuffer(trns, ">u2")
        key_alpha = np.where((samples == key).all(axis=2), 0, 65535).astype(np.uint16)
    return samples, key_alpha, orientation


def _encode_png16(samples: np.ndarray) -> bytes:
    """Encode uint16 H x W x C (C = 1..4) as a 16-bit PNG, choosing a filter per row."""
    height, width, channels = samples.shape
    color = {v: k for k, v in _PNG_CHANNELS.items()}[channels]
    bpp = 2 * channels
    raw = samples.astype(">u2").view(np.uint8).reshape(height, width * bpp).astype(np.int16)
    a, b, c = np.zeros_like(raw), np.zeros_like(raw), np.zeros_like(raw)
    a[:, bpp:] = raw[:, :-bpp]
    b[1:] = raw[:-1]
    c[1:, bpp:] = raw[:-1, :-bpp]
    preds = (np.zeros_like(raw), a, b, (a + b) >> 1, _paeth(a, b, c))
    cands = np.stack([(raw - pred) & 255 for pred in preds])  # residuals for filters 0-4
    best = np.minimum(cands, 256 - cands).sum(axis=2).argmin(axis=0)  # min sum of |residual|
    filt = cands[best, np.arange(height)].astype(np.uint8)
    body = np.concatenate([best.astype(np.uint8)[:, None], filt], axis=1).tobytes()

    def chunk(ctype: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(ctype + data))
        return struct.pack(">I", len(data)) + ctype + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 16, color, 0, 0, 0)
    return (
        _PNG_SIG
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(body, 6))
        + chunk(b"IEND", b"")
    )


def _png16_color_type(data: bytes) -> int | None:
    """Colour type of a 16-bit PNG from its IHDR, or None if not a 16-bit PNG."""
    if len(data) >= 33 and data.startswith(_PNG_SIG) and data[12:16] == b"IHDR":
        return data[25] if data[24] == 16 else None
    return None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an H x W [x C] array, like exif_transpose."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.rot90(x, 2).swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(arr) if op else arr)


# --------------------------------------------------------------------------- reading


def _picture_from_samples(samples: np.ndarray, alpha: np.ndarray | None, depth: int) -> Picture:
    scale = np.float32(65535.0 if depth == 16 else 255.0)
    pixels = samples.astype(np.float32) / scale
    alpha_f = None if alpha is None else alpha.astype(np.float32) / scale
    return Picture(pixels=pixels, alpha=alpha_f, bit_depth=depth)


def _read_png16(data: bytes) -> Picture:
    samples, key_alpha, orientation = _decode_png16(data)
    samples = _orient(samples, orientation)
    key_alpha = None if key_alpha is None else _orient(key_alpha, orientation)
    if samples.shape[2] in (2, 4):
        return _picture_from_samples(samples[:, :, :-1], samples[:, :, -1], 16)
    return _picture_from_samples(samples, key_alpha, 16)


def _read_pillow(data: bytes) -> Picture:
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        img = ImageOps.exif_transpose(opened)
    mode = img.mode
    if mode in _MODES_16:
        arr = np.asarray(img)
        trns = img.info.get("transparency")
        alpha = None
        if isinstance(trns, int):
            alpha = np.where(arr == trns, 0, 65535).astype(np.uint16)
        samples = np.clip(arr, 0, 65535).astype(np.uint16)[:, :, None]
        return _picture_from_samples(samples, alpha, 16)
    if mode == "F":
        raise ValueError("floating-point images are not supported")
    if mode == "1":
        img = img.convert("L")
    elif mode in ("L", "LA", "RGB", "RGBA"):
        if "transparency" in img.info and mode in ("L", "RGB"):
            img = img.convert("LA" if mode == "L" else "RGBA")
    elif mode == "La":
        img = img.convert("LA")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("RGBa", "RGBX") or img.has_transparency_data:
        img = img.convert("RGBA")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if img.mode in ("LA", "RGBA"):
        return _picture_from_samples(arr[:, :, :-1], arr[:, :, -1], 8)
    return _picture_from_samples(arr, None, 8)


def read_image(path: str | os.PathLike[str]) -> Picture:
    """Read an image file into a Picture (EXIF orientation applied).

    Raises ImageReadError (naming the path) for unsupported suffixes and for missing,
    empty, truncated or corrupt files.
    """
    path = Path(path)
    if not is_image_file(path):
        raise ImageReadError(
            f"cannot read image {path}: unsupported suffix {path.suffix!r} "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    try:
        data = path.read_bytes()
        if not data:
            raise ValueError("file is empty")
        if _png16_color_type(data) in (2, 4, 6):
            return _read_png16(data)
        return _read_pillow(data)
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {path}: file not found") from exc
    except Image.UnidentifiedImageError as exc:  # its message names an anonymous BytesIO
        raise ImageReadError(f"cannot read image {path}: not a recognised image") from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


# --------------------------------------------------------------------------- writing


def _quantize(x: np.ndarray, depth: int) -> np.ndarray:
    maxval = 65535.0 if depth == 16 else 255.0
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0)
    q = np.round(np.clip(x, 0.0, 1.0) * np.float32(maxval))
    return q.astype(np.uint16 if depth == 16 else np.uint8)


def _encode(picture: Picture, fmt: str, quality: int) -> bytes:
    """Encode `picture` in Pillow format `fmt` (or our 16-bit PNG writer)."""
    alpha = picture.alpha if fmt in _ALPHA_FORMATS else None
    gray = picture.is_gray
    depth16 = picture.bit_depth == 16 and (
        fmt == "PNG" or (fmt == "TIFF" and gray and alpha is None)
    )
    if depth16 and not (gray and alpha is None):
        # 16-bit RGB, RGBA or gray+alpha PNG: Pillow cannot write these.
        planes = [picture.pixels] if alpha is None else [picture.pixels, alpha[:, :, None]]
        return _encode_png16(_quantize(np.concatenate(planes, axis=2), 16))
    if depth16:
        img = Image.fromarray(_quantize(picture.pixels[:, :, 0], 16))  # mode "I;16"
    else:
        arr = _quantize(picture.pixels, 8)
        if alpha is not None:
            arr = np.concatenate([arr, _quantize(alpha, 8)[:, :, None]], axis=2)
        if gray and fmt == "WEBP":  # WebP has no gray mode
            arr = np.concatenate([arr[:, :, :1]] * 3 + [arr[:, :, 1:]], axis=2)
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_image(path: str | os.PathLike[str], picture: Picture, quality: int = 95) -> Path:
    """Write `picture` atomically; the format comes from the suffix. Returns the path.

    PNG keeps 16 bits and alpha; TIFF keeps alpha and 16 bits for gray without alpha;
    WebP keeps alpha (8-bit, gray stored as RGB); JPEG and BMP are 8-bit without alpha.
    `quality` (1-100) applies to JPEG and WebP. Parent directories are created.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {path}: unsupported suffix {path.suffix!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    data = _encode(picture, fmt, quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- tensors


def picture_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x C (or H x W) array -> float32 tensor [1, C, H, W] (always a copy)."""
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an H x W x C array, got shape {arr.shape}")
    chw = np.array(arr.transpose(2, 0, 1), dtype=np.float32, order="C", copy=True)
    return torch.from_numpy(chw).unsqueeze(0)


def tensor_to_pixels(t: torch.Tensor) -> np.ndarray:
    """[1, C, H, W] or [C, H, W] tensor -> H x W x C float32 array clamped to [0, 1].

    NaNs become 0.
    """
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected batch size 1, got shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"expected [1, C, H, W] or [C, H, W], got shape {tuple(t.shape)}")
    t = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0).clamp(0.0, 1.0)
    return t.permute(1, 2, 0).contiguous().numpy()
