"""The learning-rate schedule (linear warm-up, then cosine or constant) and the optimiser it drives."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from rnascl_tf.configs import OptimConfig
from rnascl_tf.runtime.optimizers import WarmupCosine, make_optimizer


def _lr(schedule, step):
  return float(ops.convert_to_numpy(schedule(step)))


def test_warmup_then_cosine_at_the_landmark_steps():
  s = WarmupCosine(peak=0.4, total_steps=110, warmup_steps=10)
  # Warm-up step k runs at peak * (k + 1) / warmup_steps, so the first step already moves.
  assert _lr(s, 0) == pytest.approx(0.04)
  assert _lr(s, 4) == pytest.approx(0.2)  # Mid warm-up: half the peak.
  assert _lr(s, 9) == pytest.approx(0.4)  # Last warm-up step: the peak.
  assert _lr(s, 10) == pytest.approx(0.4)  # Cosine starts at the peak...
  assert _lr(s, 60) == pytest.approx(0.2, abs=1e-6)  # ...is halfway down halfway through...
  assert _lr(s, 35) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 0.25)), rel=1e-5)
  assert _lr(s, 110) == pytest.approx(0.0, abs=1e-7)  # ...and ends at 0,
  assert _lr(s, 500) == pytest.approx(0.0, abs=1e-7)  # where it stays.
  values = [_lr(s, k) for k in range(111)]
  assert all(a < b for a, b in zip(values[:9], values[1:10]))  # Rising through the warm-up,
  assert all(a >= b for a, b in zip(values[9:], values[10:]))  # never rising afterwards.


def test_constant_schedule_and_no_warmup():
  s = WarmupCosine(peak=0.1, total_steps=100, warmup_steps=4, cosine=False)
  assert [_lr(s, k) for k in (0, 1, 3, 50, 99, 1000)] == pytest.approx([0.025, 0.05, 0.1, 0.1, 0.1, 0.1])
  plain = WarmupCosine(peak=0.1, total_steps=100)
  assert _lr(plain, 0) == pytest.approx(0.1) and _lr(plain, 100) == pytest.approx(0.0, abs=1e-7)


def test_schedule_round_trips_through_its_config():
  s = WarmupCosine(peak=0.3, total_steps=50, warmup_steps=5, cosine=False)
  config = keras.saving.serialize_keras_object(s)
  again = keras.saving.deserialize_keras_object(config)
  assert isinstance(again, WarmupCosine) and again.get_config() == s.get_config()


@pytest.mark.parametrize("name,cls", [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam)])
def test_make_optimizer_converts_warmup_epochs_to_steps(name, cls):
  cfg = OptimConfig(optimizer=name, learning_rate=0.2, weight_decay=0.0, schedule="cosine", warmup_epochs=1.5)
  opt = make_optimizer(cfg, total_steps=40, steps_per_epoch=4)
  assert isinstance(opt, cls) and opt.weight_decay is None
  schedule = keras.saving.deserialize_keras_object(opt.get_config()["learning_rate"])
  assert isinstance(schedule, WarmupCosine)
  assert (schedule.peak, schedule.total_steps, schedule.warmup_steps, schedule.cosine) == (0.2, 40, 6, True)
  np.testing.assert_allclose(_lr(schedule, 2), 0.1, rtol=1e-6)
