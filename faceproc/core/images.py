"""Image conversions every stage shares: face crops as PNG bytes, any Pillow mode as 8-bit RGB."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def encode_png(rgb: np.ndarray) -> bytes:
    """An RGB uint8 face crop as PNG bytes (lossless, as shards store them)."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """PNG (or any OpenCV-readable) bytes of a face crop -> RGB uint8; ValueError when undecodable."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the face crop is not a decodable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def object_array(items: list) -> np.ndarray:
    """A 1-D object array of `items`, even when every item is an array of the same shape."""
    out = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        out[index] = item
    return out


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB: scale high-bit-depth modes, composite alpha onto white."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _to_uint8(np.asarray(im), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im if mode == "RGB" else im.convert("RGB"))


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale, not clip: Pillow's own convert("L") clips 16-bit data to 255 and whitens the image."""
    v = values.astype(np.float64)
    if mode.startswith("I;16") or (mode == "I" and v.size and v.min() >= 0 and v.max() <= 65535):
        scaled = v / 257.0  # 65535 -> 255 exactly
    elif mode == "F" and v.size and v.min() >= 0 and v.max() <= 1:
        scaled = v * 255.0
    else:  # 32-bit or float data of unknown range: stretch what is there
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = (np.nan_to_num(v, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
