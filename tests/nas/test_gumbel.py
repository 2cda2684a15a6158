"""Gumbel-softmax sampling: a distribution per row, straight-through hard samples, temperature, seeding."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from rnascl_tf.nas.gumbel import gumbel_softmax

_LOGITS = np.array([[2.0, 0.5, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-3.0, 4.0, 1.0, 0.5]], "float32")


def _np(x):
  return ops.convert_to_numpy(x)


def test_rows_sum_to_one_soft_and_hard():
  for hard in (False, True):
    sample = _np(gumbel_softmax(ops.convert_to_tensor(_LOGITS), 0.7, seed=3, hard=hard))
    assert sample.shape == _LOGITS.shape
    np.testing.assert_allclose(sample.sum(axis=-1), 1.0, atol=1e-6)
    assert (sample >= 0).all()


def test_hard_is_the_one_hot_of_the_soft_sample_with_its_gradient():
  logits = tf.Variable(_LOGITS)
  w = tf.constant(np.random.default_rng(0).standard_normal(_LOGITS.shape).astype("float32"))
  outputs, grads = {}, {}
  for hard in (False, True):
    with tf.GradientTape() as tape:
      sample = gumbel_softmax(logits, 0.5, seed=11, hard=hard)  # Same int seed: the same noise.
      loss = tf.reduce_sum(sample * w)
    outputs[hard], grads[hard] = sample.numpy(), tape.gradient(loss, logits).numpy()
  hard, soft = outputs[True], outputs[False]
  np.testing.assert_array_equal(hard, np.eye(_LOGITS.shape[1])[soft.argmax(axis=-1)])
  # Straight-through: the forward value is one-hot, the gradient is the soft sample's.
  np.testing.assert_allclose(grads[True], grads[False], rtol=1e-5, atol=1e-6)
  assert np.abs(grads[True]).max() > 0


def test_lower_temperature_is_sharper():
  def entropy(p):
    return -(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1)

  # The same noise at every temperature (same int seed): per row, entropy falls with tau.
  x = ops.convert_to_tensor(_LOGITS)
  by_tau = [entropy(_np(gumbel_softmax(x, tau, seed=5))) for tau in (5.0, 1.0, 0.2)]
  assert (by_tau[0] > by_tau[1]).all() and (by_tau[1] > by_tau[2]).all()
  assert _np(gumbel_softmax(x, 0.01, seed=5)).max(axis=-1).min() > 0.99  # Close to one-hot.


def test_seeded_samples_are_reproducible():
  x = ops.convert_to_tensor(_LOGITS)
  np.testing.assert_array_equal(_np(gumbel_softmax(x, 1.0, seed=7)), _np(gumbel_softmax(x, 1.0, seed=7)))
  assert not np.allclose(_np(gumbel_softmax(x, 1.0, seed=7)), _np(gumbel_softmax(x, 1.0, seed=8)))
  # A SeedGenerator advances: successive draws differ, and a new generator of the same seed repeats them.
  first, second = keras.random.SeedGenerator(4), keras.random.SeedGenerator(4)
  a = [_np(gumbel_softmax(x, 1.0, seed=first)) for _ in range(2)]
  b = [_np(gumbel_softmax(x, 1.0, seed=second)) for _ in range(2)]
  assert not np.allclose(a[0], a[1])
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
