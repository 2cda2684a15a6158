"""Shared models of the evaluation tests: a partly robust toy MLP, its honest evaluation, a tiny teacher file."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from rnascl_tf.configs import EvalConfig
from rnascl_tf.evaluation import engine
from rnascl_tf.models.layers import PixelNormalization

NUM_CLASSES = 4
SHAPE = (8, 8, 1)
EPS = 4 / 255  # The toy model is partly robust here, so the sweep and the checks mean something.


def _make_data(templates, n, seed):
  """Class k = 0.5 + 0.02 * template_k + noise: separable, but an L-inf budget of 8/255 (> 0.02) can
  flip every example and 4/255 about half."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n)
  x = 0.5 + 0.02 * templates[y] + 0.05 * rng.standard_normal((n,) + SHAPE)
  return np.clip(x, 0, 1).astype("float32"), y.astype("int32")


@pytest.fixture(scope="session")
def toy():
  """A small MLP trained to ~95% clean accuracy, its inference-mode model_fn and 32 test examples.

  `toy.evaluate(config, fn=None)` runs `engine.evaluate_model` on them (batches of 16).
  """
  keras.utils.set_random_seed(0)
  templates = np.random.default_rng(0).choice([-1.0, 1.0], size=(NUM_CLASSES,) + SHAPE)
  x_train, y_train = _make_data(templates, 512, 1)
  x, y = _make_data(templates, 32, 2)
  model = keras.Sequential([
      keras.Input(SHAPE), PixelNormalization([0.5], [0.25]), keras.layers.Flatten(),
      keras.layers.Dense(16, activation="relu"), keras.layers.Dense(NUM_CLASSES)])
  model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x_train, y_train, batch_size=32, epochs=2, verbose=0)
  model_fn = lambda images: model(images, training=False)  # noqa: E731
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

  def evaluate(config, fn=None):
    return engine.evaluate_model(fn or model_fn, dataset, config, NUM_CLASSES, SHAPE, batch_size=16)

  return types.SimpleNamespace(model=model, model_fn=model_fn, x=x, y=y, dataset=dataset, evaluate=evaluate,
                               num_classes=NUM_CLASSES, shape=SHAPE, eps=EPS)


@pytest.fixture(scope="session")
def honest(toy):
  """The toy evaluated by four white-box attacks, the sweep and the black-box check: every check passes."""
  config = EvalConfig(eps=EPS, step_size=1 / 255, attacks=("fgsm", "pgd10", "mifgsm10", "cw10"),
                      eps_sweep=(2 / 255, 4 / 255, 8 / 255, 16 / 255), blackbox_queries=200)
  return toy.evaluate(config)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory):
  """An untrained tiny teacher saved as .keras (8x8x1 digits, 10 classes)."""
  root = tmp_path_factory.mktemp("models")
  teacher_path = helpers.save_tiny_teacher(str(root / "teacher.keras"))
  return types.SimpleNamespace(root=root, teacher=teacher_path)
