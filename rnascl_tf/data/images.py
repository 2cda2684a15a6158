"""Image conversions, resizing and per-channel statistics shared by the loaders and the pipelines.

The tensor ops are graph-safe (they run inside tf.data maps); images are uint8 or [0, 1] floats.
"""

import numpy as np
import tensorflow as tf

from rnascl_tf.errors import UserInputError


def to_float01(image):
  """Returns `image` as float32 in [0, 1] (uint8 is divided by 255, floats are kept)."""
  if image.dtype == tf.uint8:
    return tf.cast(image, tf.float32) / 255.0
  return tf.cast(image, tf.float32)


def _to_uint8(image_0_255):
  return tf.cast(tf.clip_by_value(tf.round(image_0_255), 0.0, 255.0), tf.uint8)


def resize_square_uint8(image, size: int):
  """Resizes a uint8 image (or batch) to size x size (bilinear, antialiased when shrinking)."""
  return _to_uint8(tf.image.resize(image, [size, size], antialias=True))


def resize_shorter_center_crop(image, shorter: int, crop: int):
  """Resizes the shorter side of a uint8 image to `shorter`, then takes the centre crop x crop."""
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = shorter / tf.reduce_min(hw)
  new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), crop)
  image = tf.image.resize(image, new_hw, antialias=True)
  image = tf.image.resize_with_crop_or_pad(image, crop, crop)
  return _to_uint8(image)


def resize_array_uint8(x: np.ndarray, size: int) -> np.ndarray:
  """Resizes a uint8 array [N, H, W, C] to [N, size, size, C] (see `resize_square_uint8`)."""
  out = np.empty((len(x), size, size, x.shape[-1]), np.uint8)
  for start in range(0, len(x), 1024):  # Chunks bound the float32 copy.
    out[start:start + 1024] = resize_square_uint8(x[start:start + 1024], size).numpy()
  return out


def normalization_constants(x) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of images as [0, 1] pixels.

  Args:
    x: [N, H, W, C] uint8 (divided by 255) or float array already in [0, 1].

  Returns:
    (mean, std), each a tuple of C floats.
  """
  x = np.asarray(x)
  if x.ndim != 4 or len(x) == 0:
    raise UserInputError(f"normalization_constants expects a non-empty [N, H, W, C] array, got shape {x.shape}")
  scale = 255.0 if x.dtype == np.uint8 else 1.0
  total = np.zeros(x.shape[-1], np.float64)
  total_sq = np.zeros(x.shape[-1], np.float64)
  # Chunks keep the float64 copy small (CIFAR as float64 at once would be 1.2 GB).
  for start in range(0, len(x), 2048):
    chunk = x[start:start + 2048].astype(np.float64) / scale
    total += chunk.sum(axis=(0, 1, 2))
    total_sq += np.square(chunk).sum(axis=(0, 1, 2))
  count = x.shape[0] * x.shape[1] * x.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)
