"""Robust accuracy of one model: per-example correctness under each attack, batch by batch.

`RobustEvaluator` compiles the model and every attack once; `attack_batch` gives, per attack, which
examples of a batch the model still classifies correctly. Both callers build on it: the training-time
validation (`robust_accuracy`, `RobustEvaluator.evaluate`: totals and the worst case over its attacks)
and the evaluation engine (`rnascl_tf.evaluation.engine`, which adds the ART attacks to the worst case).
"""

import dataclasses
import functools
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from rnascl_tf.errors import UserInputError
from rnascl_tf.robust import attacks
from rnascl_tf.robust.attack_specs import AttackConfig


@dataclasses.dataclass(frozen=True)
class AttackOutcome:
  """One attack on one batch.

  Attributes:
    config: the attack.
    label: `config.label()`.
    x_adv: float32 [B, H, W, C] adversarial images.
    correct: bool [B]: the model still classifies the example correctly at `x_adv`.
    seconds: wall time of the attack and of the prediction on `x_adv`.
  """
  config: AttackConfig
  label: str
  x_adv: np.ndarray
  correct: np.ndarray
  seconds: float


def batches(dataset: Iterable, max_examples: Optional[int] = None, where: str = "robust_accuracy"):
  """(x, y) batches as float32 / int32 numpy arrays, checked, truncated to `max_examples` in total.

  Args:
    dataset: iterable of (images, int labels) batches.
    max_examples: stop after this many examples (the last batch is truncated); None for all.
    where: the caller, named in errors.

  Yields:
    (x [B, H, W, C] pixels in [0, 1], y [B]).

  Raises:
    UserInputError: max_examples < 1, a batch that is not images and labels, or pixels outside [0, 1].
  """
  if max_examples is not None and max_examples < 1:
    raise UserInputError(f"{where}: max_examples={max_examples}, expected None or >= 1")
  n = 0
  for x, y in dataset:
    if max_examples is not None and n >= max_examples:
      return
    x, y = np.asarray(x, np.float32), np.asarray(y).astype(np.int32)
    if max_examples is not None:
      x, y = x[:max_examples - n], y[:max_examples - n]
    if x.ndim != 4 or y.shape != (x.shape[0],):
      raise UserInputError(f"{where}: batches must be images [B, H, W, C] and labels [B], got {x.shape}, {y.shape}")
    attacks.check_pixel_range(x, where)
    n += x.shape[0]
    yield x, y


def pad_batch(arrays: Sequence[np.ndarray], size: int) -> list:
  """Pads every array along axis 0 to `size` rows by repeating its last row (valid pixels and labels).

  >>> [a.tolist() for a in pad_batch([np.array([1, 2]), np.array([[3], [4]])], 4)]
  [[1, 2, 2, 2], [[3], [4], [4], [4]]]
  """
  return [a if len(a) >= size else np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)]) for a in arrays]


class RobustEvaluator:
  """Clean and per-attack correctness of one model, with graphs compiled once.

  Build it once per model and reuse it (every epoch, every batch): one compiled graph per attack (and
  one for the model) serves the whole run; eager PGD would pay Python overhead on every step. A batch
  smaller than the largest one attacked so far (the last one of a split) is padded to that size for
  the attacks and cut back before anything is counted, so each attack is traced once (a second
  shape cost ~5 s per attack on CPU); attacks treat every example on its own, so the padding rows do
  not change the real ones.

  Args:
    model_fn: callable images -> logits with `training=False`; differentiable for the attacks.
    configs: the attacks; their labels must be distinct.

  Example:
  >>> ev = RobustEvaluator(lambda x: model(x, training=False), [AttackConfig("pgd", steps=10)])
  >>> [o.correct.mean() for o in ev.attack_batch(x, y)]  # One batch, per attack.
  >>> ev.evaluate(val_ds, max_examples=500)["worst_case"]  # Totals over a dataset.
  """

  def __init__(self, model_fn: Callable, configs: Sequence[AttackConfig]):
    self.configs = list(configs)
    self.labels = [c.label() for c in self.configs]
    if len(set(self.labels)) != len(self.labels):
      raise UserInputError(f"robust_accuracy: configs contain duplicate attacks: {self.labels}")
    self._predict = tf.function(model_fn, reduce_retracing=True)
    self._batch_size = 0  # The largest batch attacked so far: smaller ones are padded to it.
    # One model_fn object for every attack: cleverhans' gradient helper retraces per callable.
    self._attacks = [tf.function(functools.partial(attacks.generate, model_fn, config=c), reduce_retracing=True)
                     for c in self.configs]

  def predict(self, x) -> np.ndarray:
    """float32 logits [B, K] of images `x` [B, H, W, C] (compiled, inference mode)."""
    return np.asarray(self._predict(tf.convert_to_tensor(x, tf.float32)), np.float32)

  def attack_batch(self, x, y, clean_logits: Optional[np.ndarray] = None) -> Iterator[AttackOutcome]:
    """Runs every attack on one batch, in `configs` order.

    Lazy: each outcome is computed when it is asked for, so a caller can report progress per attack.
    A "trades_kl" attack gets the model's clean probabilities as its target and is scored against `y`.

    Args:
      x: float32 [B, H, W, C] pixels in [0, 1] (not checked here: see `batches`).
      y: int true labels [B].
      clean_logits: `predict(x)` when the caller has it already; computed otherwise.

    Yields:
      One `AttackOutcome` per attack.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int32)
    n = x.shape[0]
    self._batch_size = max(self._batch_size, n)
    x_pad, y_pad = pad_batch([x, y], self._batch_size)
    x_t, y_t = tf.convert_to_tensor(x_pad), tf.convert_to_tensor(y_pad)
    probs = None
    for config, label, attack_fn in zip(self.configs, self.labels, self._attacks):
      start = time.perf_counter()
      if config.name == "trades_kl":
        if probs is None:
          logits = self._predict(x_t) if clean_logits is None else pad_batch(
              [np.asarray(clean_logits, np.float32)], self._batch_size)[0]
          probs = tf.nn.softmax(logits)
        target = probs
      else:
        target = y_t
      x_adv = attack_fn(x_t, target)
      correct = np.argmax(np.asarray(self._predict(x_adv))[:n], -1) == y  # The padding is never counted.
      yield AttackOutcome(config, label, np.asarray(x_adv, np.float32)[:n], correct, time.perf_counter() - start)

  def evaluate(self, dataset: Iterable, max_examples: Optional[int] = None) -> dict:
    """See `robust_accuracy`."""
    n = 0
    correct = {"clean": 0, **{label: 0 for label in self.labels}}
    worst = 0
    max_pert = {label: 0.0 for label in self.labels}
    for x, y in batches(dataset, max_examples):
      logits = self.predict(x)
      robust = np.argmax(logits, -1) == y
      correct["clean"] += int(robust.sum())
      for out in self.attack_batch(x, y, logits):
        correct[out.label] += int(out.correct.sum())
        robust &= out.correct
        size = float(tf.reduce_max(attacks.perturbation_norm(out.x_adv, x, out.config.norm)))
        max_pert[out.label] = max(max_pert[out.label], size)
      worst += int(robust.sum())
      n += x.shape[0]
    if n == 0:
      raise UserInputError("robust_accuracy: the dataset yielded no examples")
    result = {key: count / n for key, count in correct.items()}
    result.update(worst_case=worst / n, num_examples=n, max_perturbation=max_pert)
    return result


def robust_accuracy(model_fn: Callable, dataset: Iterable, configs: Sequence[AttackConfig],
                    max_examples: Optional[int] = None) -> dict:
  """Clean and per-attack accuracy plus the per-example worst case over all attacks run.

  Runs over `(x, y)` batches (x pixels in [0, 1], y int labels). A "trades_kl" config is given the
  model's clean probabilities as its target and scored against the true labels.

  Args:
    model_fn: callable images -> logits with `training=False`; use one object for the whole run.
    dataset: iterable of (x, y) batches, e.g. a batched `tf.data.Dataset`.
    configs: the attacks; their labels must be distinct.
    max_examples: stop after this many examples (the last batch is truncated); None for all.

  Returns:
    {"clean": acc, "<label>": acc per attack, "worst_case": acc of examples correct under clean and
    every attack, "num_examples": n, "max_perturbation": {label: max over examples of |x_adv - x|
    in the attack's norm}}. Accuracies are Python floats in [0, 1].
  """
  return RobustEvaluator(model_fn, configs).evaluate(dataset, max_examples)
