"""Small shared Keras layers: pixel-space normalisation inside every model."""

from typing import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnascl_tf")
class PixelNormalization(keras.layers.Layer):
  """Maps [0, 1] pixel images to (x - mean) / std per channel, inside the model.

  Every model of this project takes pixels in [0, 1] so that attack budgets (epsilon) are in pixel
  units; the dataset's mean/std live here, not in the input pipeline.

  Args:
    mean: per-channel means of [0, 1] pixels.
    std: per-channel standard deviations of [0, 1] pixels.

  Example:
  >>> layer = PixelNormalization(mean=[0.5], std=[0.25])
  >>> float(layer(ops.ones((1, 2, 2, 1)))[0, 0, 0, 0])
  2.0
  """

  def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
    super().__init__(**kwargs)
    if len(mean) != len(std):
      raise ValueError(f"mean ({len(mean)}) and std ({len(std)}) must have one value per channel")
    if min(std) <= 0:
      raise ValueError(f"std must be positive, got {list(std)}")
    self.mean = [float(m) for m in mean]
    self.std = [float(s) for s in std]

  def build(self, input_shape):
    if input_shape[-1] is not None and input_shape[-1] != len(self.mean):
      raise ValueError(
          f"PixelNormalization has {len(self.mean)} channels but the input has {input_shape[-1]} (shape {input_shape})")

  def call(self, x):
    x = ops.cast(x, self.compute_dtype)
    mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
    std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
    return (x - mean) / std

  def get_config(self):
    return {**super().get_config(), "mean": self.mean, "std": self.std}
