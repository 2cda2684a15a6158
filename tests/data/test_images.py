"""Tests for rnascl_tf.data.images: per-channel statistics."""

import numpy as np

from rnascl_tf.data.images import normalization_constants


def test_normalization_constants_uint8_and_float():
  x = np.zeros((2, 2, 2, 2), np.uint8)
  x[..., 0] = 255
  x[0, ..., 1] = 255  # Channel 1: half the pixels 1.0, half 0.0.
  mean, std = normalization_constants(x)
  np.testing.assert_allclose(mean, (1.0, 0.5))
  np.testing.assert_allclose(std, (0.0, 0.5))
  mean_f, std_f = normalization_constants(x.astype(np.float32) / 255.0)
  np.testing.assert_allclose(mean_f, mean)
  np.testing.assert_allclose(std_f, std)
