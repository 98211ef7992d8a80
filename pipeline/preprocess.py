"""The one preprocessing definition, stored with the model.

Training, calibration, evaluation and inference all turn an image file into the
network input through :func:`load_array` with the same :class:`Preprocess`,
which is saved in the checkpoint and in every artifact's sidecar. Mismatched
preprocessing between calibration and inference is the most common cause of an
INT8 accuracy collapse, so there is exactly one implementation, in PIL and
numpy (no torch), that the device side runs too.

This module stays Python 3.6 compatible: the device-side route imports it.
"""

from typing import NamedTuple, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .artifacts import sha256_json
from .errors import JetquantError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


class Preprocess(NamedTuple):
    """How an image file becomes a float32 CHW array.

    Attributes:
        resize: the shorter side is resized to this many pixels.
        crop: then a centred square of this size is cut out (the network input size).
        interpolation: PIL resampling filter name.
        mean: per-channel mean subtracted after scaling to [0, 1] (RGB order).
        std: per-channel standard deviation divided by.
    """

    resize: int = 224
    crop: int = 224
    interpolation: str = "bilinear"
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD

    def to_dict(self):
        """Return a JSON-friendly dict (also the form stored in checkpoints)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": "RGB",
            "layout": "NCHW",
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are refused."""
        try:
            spec = cls(
                int(data["resize"]),
                int(data["crop"]),
                str(data["interpolation"]),
                tuple(float(v) for v in data["mean"]),
                tuple(float(v) for v in data["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise JetquantError(
                "preprocessing record {} is incomplete ({}); re-export the model".format(data, exc)
            ) from None
        if (spec.interpolation not in _RESAMPLE or spec.crop > spec.resize or spec.crop < 1
                or len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0):
            raise JetquantError("preprocessing record {} is invalid".format(data))
        return spec

    def digest(self):
        """Short content hash, used in cache and artifact keys."""
        return sha256_json(self.to_dict())[:16]


def open_rgb(path):
    """Open an image file and convert it to 8-bit RGB, deliberately.

    Conversions: grayscale (L, 1) is replicated to three channels; 16-bit
    grayscale (I;16, I) is scaled to 8 bits (value / 257), not clipped; palette
    images are expanded through their palette; an alpha channel (RGBA, LA, P
    with transparency) is composited onto black; CMYK goes through PIL's
    conversion. Anything else is refused.

    Raises:
        JetquantError: the file is missing, not an image, corrupt or truncated.
    """
    try:
        with Image.open(str(path)) as img:
            img.load()
            return _to_rgb(img, path)
    except FileNotFoundError:
        raise JetquantError("image not found: {}".format(path)) from None
    except UnidentifiedImageError:
        raise JetquantError(
            "{} is not an image file PIL can read; remove it from the data set".format(path)
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise JetquantError(
            "{} is corrupt or truncated ({}); remove or replace it".format(path, exc)
        ) from None


def _to_rgb(img, path):
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "I" and arr.min() >= 0 and arr.max() <= 255:  # 8-bit values stored as int32
            return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
        if arr.min() < 0 or arr.max() > 65535:
            raise JetquantError(
                "{}: 32-bit integer image with values outside 0..65535 is not "
                "supported; convert it to 8 or 16 bits".format(path)
            )
        gray = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGB"):
        return img.convert("RGB")
    raise JetquantError(
        "{}: image mode {} is not supported; save it as 8-bit RGB or grayscale".format(path, mode)
    )


def to_array(img, spec):
    """Turn an RGB PIL image into the normalised float32 CHW network input."""
    width, height = img.size
    scale = spec.resize / float(min(width, height))
    size = (max(spec.crop, int(round(width * scale))), max(spec.crop, int(round(height * scale))))
    if size != img.size:
        img = img.resize(size, _RESAMPLE[spec.interpolation])
    left = (size[0] - spec.crop) // 2
    top = (size[1] - spec.crop) // 2
    img = img.crop((left, top, left + spec.crop, top + spec.crop))
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_array(path, spec):
    """Read one image file into the network input array (C, H, W), float32."""
    return to_array(open_rgb(path), spec)


def load_batch(paths, spec):
    """Read several image files into one (N, C, H, W) float32 batch."""
    return np.stack([load_array(p, spec) for p in paths])
