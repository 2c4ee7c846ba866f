"""JPEG encode/decode for camera frames.

simplejpeg (libjpeg-turbo, encodes straight from RGB, releases the GIL) is used when it is
installed; OpenCV is the fallback, which needs an RGB->BGR swap around each call.
"""

from __future__ import annotations

import numpy as np

try:  # optional: ~15-45 % less CPU per frame than OpenCV because it skips the colour swap
    import simplejpeg as _sj
except ImportError:  # pragma: no cover - depends on the environment
    _sj = None

import cv2

DEFAULT_JPEG_QUALITY = 90
_CV_420 = getattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_420", 0x221111)  # same chroma subsampling as simplejpeg


def jpeg_backend() -> str:
    return "simplejpeg" if _sj is not None else "opencv"


def encode_jpeg(rgb: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Encode an HxWx3 uint8 RGB image (or HxW grey) to JPEG bytes."""
    img = np.ascontiguousarray(rgb)
    if _sj is not None:
        if img.ndim == 2:
            return _sj.encode_jpeg(img[:, :, None], quality=quality, colorspace="GRAY")
        return _sj.encode_jpeg(img, quality=quality, colorspace="RGB", colorsubsampling="420")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _CV_420]
    ok, buf = cv2.imencode(".jpg", img, params)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input
        raise ValueError("OpenCV could not JPEG-encode the frame")
    return buf.tobytes()


def decode_jpeg(data: bytes | np.ndarray) -> np.ndarray:
    """Decode JPEG bytes to an HxWx3 uint8 RGB image."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if _sj is not None:
        return _sj.decode_jpeg(raw, colorspace="RGB")
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
