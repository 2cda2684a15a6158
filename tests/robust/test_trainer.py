"""RobustTrainer: every adversarial-training mode takes real steps with the right loss."""

import keras
import numpy as np
import pytest

import helpers
from rnascl_tf.configs import RobustConfig
from rnascl_tf.robust.trainer import RobustTrainer


def _data(n=32, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (n,) + helpers.SHAPE).astype("float32")
  y = rng.integers(0, helpers.CLASSES, (n,)).astype("int32")
  return x, y


@pytest.mark.parametrize("mode, metrics", [
    ("standard", {"loss", "acc"}),
    ("pgd", {"loss", "adv_acc"}),
    ("trades", {"loss", "acc", "adv_acc"}),
    ("fast_fgsm", {"loss", "adv_acc"}),
])
def test_modes_train_and_log_what_they_compute(mode, metrics):
  net = helpers.tiny_teacher()
  trainer = RobustTrainer(net, RobustConfig(mode=mode, eps=0.1, step_size=0.05, steps=2), seed=0)
  opt = keras.optimizers.SGD(0.05)
  opt.build(net.trainable_variables)
  trainer.compile(optimizer=opt)
  before = [v.numpy().copy() for v in net.trainable_variables]
  x, y = _data()
  hist = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
  assert set(hist.history) == metrics
  assert np.isfinite(hist.history["loss"][0]) and hist.history["loss"][0] > 0
  moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, net.trainable_variables)]
  assert all(moved)


def test_pgd_training_loss_is_the_adversarial_loss():
  # The logged PGD-AT loss is CE on adversarial points, so it is not below the clean CE of the
  # same weights (checked before any update with a zero learning rate).
  net = helpers.tiny_teacher()
  trainer = RobustTrainer(net, RobustConfig(mode="pgd", eps=0.2, step_size=0.05, steps=5), seed=0)
  opt = keras.optimizers.SGD(0.0)
  opt.build(net.trainable_variables)
  trainer.compile(optimizer=opt)
  x, y = _data(16)
  clean = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, net(x, training=True)))
  adv = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
  assert adv > clean
