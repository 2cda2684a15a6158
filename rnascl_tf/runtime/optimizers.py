"""Optimisers and learning-rate schedules built from an OptimConfig."""

import math

import keras
from keras import ops

from rnascl_tf.configs import OptimConfig


@keras.saving.register_keras_serializable(package="rnascl_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`.

  Args:
    peak: peak learning rate.
    total_steps: steps of the whole run (warm-up included).
    warmup_steps: linear warm-up steps.
    cosine: False keeps the rate constant after the warm-up.

  Example:
  >>> schedule = WarmupCosine(peak=0.1, total_steps=100, warmup_steps=10)
  >>> [round(float(schedule(step)), 4) for step in (0, 4, 9, 55, 100)]
  [0.01, 0.05, 0.1, 0.05, 0.0]
  """

  def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, cosine: bool = True):
    self.peak = float(peak)
    self.total_steps = max(int(total_steps), 1)
    self.warmup_steps = int(warmup_steps)
    self.cosine = bool(cosine)

  def __call__(self, step):
    step = ops.cast(step, "float32")
    warm = ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1)) if self.warmup_steps else 1.0
    if not self.cosine:
      return self.peak * warm
    decay_steps = max(self.total_steps - self.warmup_steps, 1)
    progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
    return self.peak * warm * 0.5 * (1.0 + ops.cos(math.pi * progress))

  def get_config(self):
    return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "cosine": self.cosine}


def make_optimizer(cfg: OptimConfig, total_steps: int, steps_per_epoch: int) -> keras.optimizers.Optimizer:
  """Builds the weight optimiser with its schedule (not yet built: call `opt.build(vars)` in scope).

  Args:
    cfg: optimiser settings.
    total_steps: optimiser steps in the whole run.
    steps_per_epoch: steps per epoch (converts `warmup_epochs` to steps).

  Returns:
    A Keras optimiser.
  """
  lr = WarmupCosine(cfg.learning_rate, total_steps, int(cfg.warmup_epochs * steps_per_epoch),
                    cosine=cfg.schedule == "cosine")
  wd = cfg.weight_decay or None
  if cfg.optimizer == "sgd":
    return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, weight_decay=wd)
  return keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)
