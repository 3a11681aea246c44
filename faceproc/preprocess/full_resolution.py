"""Faces found on a reduced decode, in the photo's own pixels, cut from full resolution only where needed.

`decode.decode_reduced` decodes big JPEGs at a fraction of their size for detection. Each face's box
and keypoints are scaled back to full-resolution pixels (what rows report and the report draws), and
its crop is cut again from a full decode only when the reduced photo has fewer pixels across the crop
than the crop has: a face that fills much of a 12-megapixel photo is shrunk either way and keeps the
reduced crop; a small one is cut from the full decode, so no crop is upsampled from a reduced decode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from faceproc.config import PreprocessConfig
from faceproc.core.schema import RejectError
from faceproc.preprocess.decode import Decoded, decode_image
from faceproc.preprocess.geometry import face_crop, map_to_original

log = logging.getLogger(__name__)


def needs_full_resolution(box: Sequence[float], margin: float, face_size: int) -> bool:
    """Whether a crop of `box` (grown by `margin`) has fewer source pixels across than `face_size`."""
    side = max(box[2] - box[0], box[3] - box[1]) * (1.0 + 2.0 * margin)
    return side < face_size


def to_full_resolution(faces: list[dict[str, Any]], decoded: Decoded, data: bytes,
                       prep: PreprocessConfig) -> list[dict[str, Any]]:
    """`faces` ({"box", "keypoints", "face", "aligned", ...} in `decoded.image` pixels) in full-resolution
    pixels, re-cut from one full decode of `data` where `needs_full_resolution`. A full decode that
    fails (too little memory for it, say) keeps the reduced crops: the photo decoded once already."""
    if not decoded.reduced:
        return faces
    width, height = decoded.full_size
    full: np.ndarray | None = None
    out = []
    for face in faces:
        mapped = {**face, **map_to_original(face, decoded.fx, decoded.fy, width, height)}
        if needs_full_resolution(face["box"], prep.face_margin, prep.face_size):
            try:
                full = decode_image(data, prep.max_pixels, prep.min_side) if full is None else full
                mapped["face"], mapped["aligned"] = face_crop(full, mapped["box"], mapped["keypoints"],
                                                              prep.face_margin, prep.face_size, prep.align)
            except (RejectError, cv2.error, ValueError) as exc:
                log.warning("keeping the reduced crop of a face: the full-resolution cut failed (%s)", exc)
        out.append(mapped)
    return out
