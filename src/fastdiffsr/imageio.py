"""Image reading and writing for super-resolution: 8/16-bit, gray/RGB, optional alpha, and the
photo's metadata (ICC profile, EXIF, DPI, PNG text) carried to the output.

Pillow reads the headers and metadata of every format and decodes all but PNG (AVIF too;
HEIC/HEIF through the pillow-heif plugin, the ``photos`` extra). PNGs decode through
imagecodecs' libpng (``png_decode``; 16-bit colour PNGs are also written by its
``png_encode``): Pillow reduces 16-bit colour to 8 bits and fills the rows of a short image
with black without a word, libpng keeps 16 bits and raises a clean error. Decoding is bounded
before any pixel is inflated: the header's size is checked against ``max_pixels`` (and the
file's size against ``MAX_FILE_BYTES``) first. The one thing written here by hand is
inserting metadata chunks into a 16-bit PNG (no library writes both).
"""

from __future__ import annotations

import functools
import io
import os
import secrets
import struct
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageReadError, ImageTooLargeError

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageMeta",
    "ImageReadError",
    "Picture",
    "is_image_file",
    "picture_to_tensor",
    "quantize",
    "read_image",
    "tensor_to_pixels",
    "write_image",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff",
                                       ".avif", ".heic", ".heif")
LEVELS = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16)}  # integer samples per bit depth
MAX_PIXELS = 50_000_000  # default limit on an input's declared pixels (8K x 6K); configurable
MAX_FILE_BYTES = 1 << 30  # no image file we read is larger

_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".avif": "AVIF",
}
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "AVIF"}
_HEIF_SUFFIXES = {".heic", ".heif"}
_MODES_16 = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_ORIENTATION_TAG = 0x0112
_EXIF_IFD = 0x8769
_PIXEL_X_DIMENSION, _PIXEL_Y_DIMENSION = 0xA002, 0xA003

# Errors that Pillow, imagecodecs and struct raise for bad input (imagecodecs' errors are
# RuntimeError subclasses).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    RuntimeError,
    MemoryError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageMeta:
    """What a photo carries besides pixels, kept for the output where its format can hold it.
    ``exif`` has its orientation applied to the pixels already (the tag says 1)."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    text: dict[str, str] = field(default_factory=dict)  # PNG tEXt / iTXt chunks
    jpeg_quality: int | None = None  # a JPEG's quality (jpeg_quality), not written to outputs


@dataclass(frozen=True, eq=False)
class Picture:
    """Decoded image: float32 pixels (H x W x C, C in {1, 3}) and alpha (H x W) in [0, 1].

    ``pixels`` may instead hold the integer levels of ``bit_depth`` (uint8 for 8, uint16 for
    16), as ``upscale_picture(..., levels=True)`` makes them for ``write_image``: a 16384 x
    8640 RGB picture is 425 MB in 8 bits, 1.7 GB in float32. ``read_image`` gives floats."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    meta: ImageMeta | None = None  # the source file's metadata (read_image), or None

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels)
        if pixels.dtype != LEVELS.get(self.bit_depth):
            pixels = pixels.astype(np.float32, copy=False)
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


# --------------------------------------------------------------------------- reading


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


def _picture_from_samples(samples: np.ndarray, alpha: np.ndarray | None, depth: int,
                          meta: ImageMeta | None) -> Picture:
    scale = np.float32(65535.0 if depth == 16 else 255.0)
    pixels = samples.astype(np.float32) / scale
    alpha_f = None if alpha is None else alpha.astype(np.float32) / scale
    return Picture(pixels=pixels, alpha=alpha_f, bit_depth=depth, meta=meta)


def _metadata(img: Image.Image) -> tuple[ImageMeta, int]:
    """(the file's metadata with the EXIF orientation reset to 1, that orientation)."""
    exif = img.getexif()  # the image's own: exif_transpose reads its orientation later
    orientation = int(exif.get(_ORIENTATION_TAG, 1))
    exif_bytes = None
    if len(exif):
        kept = Image.Exif()
        kept.load(exif.tobytes())
        if _ORIENTATION_TAG in kept:
            kept[_ORIENTATION_TAG] = 1
        exif_bytes = kept.tobytes()
    dpi = _plausible_dpi(img.info.get("dpi"))
    # a PNG's text chunks before its image data (those after it would need a full decode)
    text = {k: str(v) for k, v in img.info.items() if isinstance(v, str)}
    return ImageMeta(icc_profile=img.info.get("icc_profile") or None, exif=exif_bytes,
                     dpi=dpi, text=text if img.format == "PNG" else {},
                     jpeg_quality=jpeg_quality(img)), orientation


def jpeg_quality(img: Image.Image) -> int | None:
    """The quality (1-100) a JPEG was saved at, as libjpeg's ``quality`` setting: the one
    whose luminance table is nearest the file's (L1). None for other formats and for files
    without a luminance table. MPO (a camera's JPEG with extra pictures) counts as JPEG.

    The quality is not stored in a JPEG, only the tables it scaled; Pillow reads the tables
    but has no estimate. The reference tables are libjpeg's own, read back from a tiny image
    Pillow encodes at each quality (``_ijg_luma_tables``), not typed in here. Encoders with
    their own tables (some cameras, Photoshop) get the IJG quality nearest theirs."""
    if img.format not in ("JPEG", "MPO") or 0 not in getattr(img, "quantization", {}):
        return None
    table = np.asarray(img.quantization[0], dtype=np.int32)
    if table.shape != (64,):
        return None
    distance = np.abs(_ijg_luma_tables() - table).sum(axis=1)
    return int(distance.argmin()) + 1


@functools.cache
def _ijg_luma_tables() -> np.ndarray:
    """[100, 64]: libjpeg's luminance table at quality 1 .. 100, in the file's (zigzag) order."""
    tables = []
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as encoded:
            tables.append(list(encoded.quantization[0]))
    return np.asarray(tables, dtype=np.int32)


def _plausible_dpi(dpi: object) -> tuple[float, float] | None:
    """A file's DPI as two numbers in (0, 100000], else None (a broken header's values must
    not reach the output)."""
    try:
        x, y = (float(d) for d in dpi)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (x, y) if 0 < x <= 1e5 and 0 < y <= 1e5 else None


def _read_png(data: bytes, meta: ImageMeta, orientation: int) -> Picture:
    """Any PNG through libpng (imagecodecs): [H, W, C] uint8 or uint16 in RGB order, 1 or 2
    channels for gray (+ alpha), 3 or 4 for colour (+ alpha); palettes, low bit depths and
    tRNS keys expanded. Unlike Pillow, libpng refuses image data shorter than the header
    says (Pillow fills the missing rows with black)."""
    import imagecodecs

    samples = _orient(imagecodecs.png_decode(data), orientation)
    if samples.ndim == 2:
        samples = samples[:, :, None]
    colour = 1 if samples.shape[2] <= 2 else 3
    alpha = samples[:, :, colour] if samples.shape[2] > colour else None
    depth = 16 if samples.dtype == np.uint16 else 8
    return _picture_from_samples(samples[:, :, :colour], alpha, depth, meta)


def _read_pillow(img: Image.Image, meta: ImageMeta) -> Picture:
    img.load()
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _MODES_16:
        arr = np.asarray(img)
        trns = img.info.get("transparency")
        alpha = None
        if isinstance(trns, int):
            alpha = np.where(arr == trns, 0, 65535).astype(np.uint16)
        samples = np.clip(arr, 0, 65535).astype(np.uint16)[:, :, None]
        return _picture_from_samples(samples, alpha, 16, meta)
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
        return _picture_from_samples(arr[:, :, :-1], arr[:, :, -1], 8, meta)
    return _picture_from_samples(arr, None, 8, meta)


def _open_heif_plugin(path: Path) -> None:
    """Register pillow-heif's opener for a .heic / .heif file, or say what to install."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError as exc:
        raise ImageReadError(f"cannot read image {path}: HEIC/HEIF needs the photos extra: "
                             "pip install 'fastdiffsr[photos]'") from exc
    register_heif_opener()


class _TooManyPixels(ValueError):
    pass


def _decode(data: bytes, max_pixels: int) -> Picture:
    """The file's bytes -> Picture, its declared size checked before any pixel is decoded."""
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > max_pixels or w * h == 0:
            raise _TooManyPixels(f"declares {w} x {h} pixels ({w * h / 1e6:.1f} MP), outside "
                                 f"1 .. {max_pixels:,} (the max_pixels limit)")
        meta, orientation = _metadata(img)
        if img.format == "PNG":
            return _read_png(data, meta, orientation)
        return _read_pillow(img, meta)


def read_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> Picture:
    """Read an image file into a Picture (EXIF orientation applied, metadata in ``meta``).

    The header's size is checked before any pixel is decoded: more than ``max_pixels``
    declared pixels (or a file over ``MAX_FILE_BYTES``) is an ImageReadError naming the file
    and the size. Raises ImageReadError (naming the path) for unsupported suffixes and for
    missing, empty, truncated or corrupt files.
    """
    path = Path(path)
    if not is_image_file(path):
        raise ImageReadError(
            f"cannot read image {path}: unsupported suffix {path.suffix!r} "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    if path.suffix.lower() in _HEIF_SUFFIXES:
        _open_heif_plugin(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"file of {size:,} bytes is over the {MAX_FILE_BYTES:,} limit")
        data = path.read_bytes()
        if not data:
            raise ValueError("file is empty")
        with warnings.catch_warnings():  # _decode checks the size against max_pixels;
            warnings.simplefilter("ignore")  # Pillow's notes on broken tags are not for users
            return _decode(data, max_pixels)
    except FileNotFoundError as exc:
        raise ImageReadError(f"cannot read image {path}: file not found") from exc
    except _TooManyPixels as exc:
        raise ImageTooLargeError(f"cannot read image {path}: {exc}") from exc
    except Image.UnidentifiedImageError as exc:  # its message names an anonymous BytesIO
        raise ImageReadError(f"cannot read image {path}: not a recognised image") from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


# --------------------------------------------------------------------------- writing


def quantize(x: np.ndarray, depth: int, out: np.ndarray | None = None,
             rows: int = 256) -> np.ndarray:
    """[0, 1] floats (or another depth's levels) -> the uint8 / uint16 levels of ``depth``
    (NaN -> 0), ``rows`` at a time: no full-size float temporaries beside the picture. Levels
    of ``depth`` already are returned as they are; ``out`` receives the result if given."""
    x = np.asarray(x)
    if x.dtype == LEVELS[depth] and out is None:
        return x
    maxval = np.float32(2**depth - 1)
    scale = 1 / np.float32(np.iinfo(x.dtype).max) if x.dtype.kind == "u" else None
    out = np.empty(x.shape, LEVELS[depth]) if out is None else out
    for r in range(0, x.shape[0], rows):
        band = x[r : r + rows].astype(np.float32)
        band = band * scale if scale is not None else np.nan_to_num(band, nan=0.0)
        out[r : r + rows] = np.round(np.clip(band, 0.0, 1.0) * maxval)
    return out


def output_meta(meta: ImageMeta, width: int, height: int, scale: float) -> ImageMeta:
    """The source's metadata for an upscaled copy: the same profile and text, the EXIF's pixel
    dimensions set to the new size, and the DPI times ``scale`` (same print size)."""
    exif = meta.exif
    if exif is not None:
        tags = Image.Exif()
        tags.load(exif)
        sub = tags.get_ifd(_EXIF_IFD)
        if _PIXEL_X_DIMENSION in sub or _PIXEL_Y_DIMENSION in sub:
            sub[_PIXEL_X_DIMENSION], sub[_PIXEL_Y_DIMENSION] = width, height
        exif = tags.tobytes()
    dpi = None if meta.dpi is None else (meta.dpi[0] * scale, meta.dpi[1] * scale)
    return replace(meta, exif=exif, dpi=dpi)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _png_meta_chunks(meta: ImageMeta) -> bytes:
    """iCCP, pHYs, eXIf and tEXt / iTXt chunks for ``meta`` (PNG spec 1.2 / 3rd edition)."""
    chunks = b""
    if meta.icc_profile:
        chunks += _png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(meta.icc_profile))
    if meta.dpi:
        per_metre = [round(d / 0.0254) for d in meta.dpi]
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if meta.exif:
        chunks += _png_chunk(b"eXIf", meta.exif.removeprefix(b"Exif\0\0"))
    for key, value in meta.text.items():
        try:
            chunks += _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
        except UnicodeEncodeError:
            chunks += _png_chunk(b"iTXt", key.encode("utf-8", "replace")[:79] + b"\0\0\0\0\0"
                                 + value.encode("utf-8"))
    return chunks


def _encode_png16(samples: np.ndarray, meta: ImageMeta | None) -> bytes:
    """16-bit gray+alpha, RGB or RGBA PNG by libpng (imagecodecs), the metadata chunks put
    after IHDR (imagecodecs writes none)."""
    import imagecodecs

    data = imagecodecs.png_encode(np.ascontiguousarray(samples if samples.shape[2] > 1
                                                       else samples[:, :, 0]))
    if meta is None:
        return data
    after_ihdr = len(_PNG_SIG) + 8 + 13 + 4
    return data[:after_ihdr] + _png_meta_chunks(meta) + data[after_ihdr:]


def _save_kwargs(fmt: str, meta: ImageMeta | None, quality: int) -> dict:
    """Pillow's save arguments: quality, and the metadata the format holds."""
    kwargs: dict = {"quality": quality} if fmt in ("JPEG", "WEBP", "AVIF") else {}
    if meta is None:
        return kwargs
    if meta.icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF", "AVIF"):
        kwargs["icc_profile"] = meta.icc_profile
    if meta.exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF", "AVIF"):
        kwargs["exif"] = meta.exif
    if meta.dpi and fmt in ("PNG", "JPEG", "TIFF", "BMP"):
        kwargs["dpi"] = meta.dpi
    if meta.text and fmt == "PNG":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        for key, value in meta.text.items():
            info.add_itxt(key, value)
        kwargs["pnginfo"] = info
    return kwargs


def _encode(picture: Picture, fmt: str, quality: int) -> bytes:
    """Encode ``picture`` (and its metadata) in Pillow format ``fmt`` (16-bit colour and
    gray+alpha PNG through libpng)."""
    alpha = picture.alpha if fmt in _ALPHA_FORMATS else None
    gray = picture.is_gray
    depth16 = picture.bit_depth == 16 and (
        fmt == "PNG" or (fmt == "TIFF" and gray and alpha is None)
    )
    if depth16 and not (gray and alpha is None):
        # 16-bit RGB, RGBA or gray+alpha PNG: Pillow cannot write these.
        planes = [quantize(picture.pixels, 16)]
        if alpha is not None:
            planes.append(quantize(alpha, 16)[:, :, None])
        samples = planes[0] if alpha is None else np.concatenate(planes, axis=2)
        return _encode_png16(samples, picture.meta)
    if depth16:
        img = Image.fromarray(quantize(picture.pixels[:, :, 0], 16))  # mode "I;16"
    else:
        arr = quantize(picture.pixels, 8)
        if alpha is not None:
            arr = np.concatenate([arr, quantize(alpha, 8)[:, :, None]], axis=2)
        if gray and fmt in ("WEBP", "AVIF"):  # no gray mode
            arr = np.concatenate([arr[:, :, :1]] * 3 + [arr[:, :, 1:]], axis=2)
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **_save_kwargs(fmt, picture.meta, quality))
    return buf.getvalue()


def write_image(path: str | os.PathLike[str], picture: Picture, quality: int = 95) -> Path:
    """Write ``picture`` atomically; the format comes from the suffix. Returns the path.

    PNG keeps 16 bits and alpha; TIFF keeps alpha and 16 bits for gray without alpha;
    WebP and AVIF keep alpha (8-bit, gray stored as RGB); JPEG and BMP are 8-bit without
    alpha. ``picture.meta`` (ICC profile, EXIF, DPI, PNG text) goes where the format holds it.
    ``quality`` (1-100) applies to JPEG, WebP and AVIF. Parent directories are created.
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
