"""The tiny undefended toy model (8x8x3 pixels, 4 classes) the attack and evaluator tests attack."""

import types

import keras
import numpy as np
import pytest

from rnascl_tf.models.layers import PixelNormalization

NUM_CLASSES = 4


def _make_data(templates, n, seed):
  """Class k = 0.5 + 0.02 * template_k + small noise: separable, but only by 0.02 per pixel, so an
  L-inf attack of 8/255 (> 0.02) can flip it and 4/255 flips about half."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, NUM_CLASSES, n)
  x = 0.5 + 0.02 * templates[y] + 0.05 * rng.standard_normal((n, 8, 8, 3))
  return np.clip(x, 0, 1).astype("float32"), y.astype("int32")


@pytest.fixture(scope="session")
def toy():
  """A small MLP trained for 32 steps to ~100% clean accuracy, its inference-mode model_fn and 64 examples."""
  keras.utils.set_random_seed(0)
  templates = np.random.default_rng(0).choice([-1.0, 1.0], size=(NUM_CLASSES, 8, 8, 3))
  x_train, y_train = _make_data(templates, 512, 1)
  x, y = _make_data(templates, 64, 2)
  model = keras.Sequential([
      keras.Input((8, 8, 3)),
      PixelNormalization([0.5] * 3, [0.25] * 3),
      keras.layers.Flatten(),
      keras.layers.Dense(16, activation="relu"),
      keras.layers.Dense(NUM_CLASSES),
  ])
  model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x_train, y_train, batch_size=32, epochs=2, verbose=0)
  # One model_fn object for the whole session: cleverhans' compute_gradient retraces per callable.
  model_fn = lambda images: model(images, training=False)  # noqa: E731
  return types.SimpleNamespace(model=model, model_fn=model_fn, x=x, y=y, num_classes=NUM_CLASSES)
