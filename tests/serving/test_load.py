"""Tests for rnascl_tf.serving.load: the export as a checked, differentiable model_fn that attacks can run on."""

import os

import numpy as np
import pytest
import tensorflow as tf

import helpers
from rnascl_tf.errors import UserInputError
from rnascl_tf.robust import attacks
from rnascl_tf.serving import export, load

SHAPE = (8, 8, 3)
# uint8 images and the same pixels as float32 in [0, 1] (what a client computes: u8 / 255).
U8 = np.random.default_rng(0).integers(0, 256, (4,) + SHAPE, dtype=np.uint8)
X = U8.astype(np.float32) / 255


@pytest.fixture(scope="module")
def model():
  return helpers.tiny_teacher(SHAPE, 10)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
  return export.export_for_serving(model, str(tmp_path_factory.mktemp("serving")), "tiny", 1)


def test_serving_model_checks_inputs(exported):
  sm = load.load_serving(os.path.dirname(exported))  # The model folder: the highest version is used.
  assert sm.path == exported and sm.image_shape == SHAPE and sm.num_classes == 10
  u8, x = U8[:2], X[:2]
  assert sm(x.astype(np.float64)).shape == (2, 10)  # Other float dtypes are cast.
  with pytest.raises(UserInputError, match="dtype uint8 .*255"):
    sm(u8)
  with pytest.raises(UserInputError, match=r"shape \[batch, 8, 8, 3\].*\[8, 8, 3\]"):
    sm(x[0])
  with pytest.raises(UserInputError, match="shape"):
    sm(np.zeros((2, 8, 8, 1), np.float32))
  with pytest.raises(UserInputError, match=r"\[0, 1\]"):
    sm(x * 255)
  with pytest.raises(UserInputError, match="inference mode"):
    sm(x, training=True)
  with pytest.raises(UserInputError, match="neither saved_model.pb"):
    load.load_serving(os.path.dirname(os.path.dirname(exported)))


def test_gradients_flow_through_the_exported_signature(model, exported):
  sm = load.load_serving(exported)
  x = tf.constant(X[:4])

  def grad(fn, t):
    with tf.GradientTape() as tape:
      tape.watch(t)
      loss = tf.reduce_sum(fn(t)[:, 3])
    return tape.gradient(loss, t)

  expected = grad(lambda t: model(t, training=False), x).numpy()
  np.testing.assert_allclose(grad(sm, x).numpy(), expected, atol=1e-5)
  np.testing.assert_allclose(tf.function(lambda t: grad(sm, t))(x).numpy(), expected, atol=1e-5)
  # The attacks run on the export (cleverhans traces model_fn inside its own tf.function).
  config = attacks.AttackConfig("fgsm", eps=4 / 255)
  y = tf.constant([0, 1, 2, 3])
  adv_export = attacks.generate(sm, x, y, config).numpy()
  adv_keras = attacks.generate(lambda t: model(t, training=False), x, y, config).numpy()
  assert np.abs(adv_export - x.numpy()).max() <= 4 / 255 + 1e-6
  assert (np.abs(adv_export - adv_keras) < 1e-6).mean() > 0.99  # Same gradient signs up to float noise.
