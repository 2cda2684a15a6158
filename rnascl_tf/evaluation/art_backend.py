"""Runs the IBM ART attacks of an `ArtPlan` (APGD-CE, APGD-T, Square) on numpy batches."""

import warnings
from typing import Callable

import numpy as np
import tensorflow as tf

from rnascl_tf.evaluation.plan import ArtPlan


class _ArtModel:
  """`model_fn` with the `training` keyword ART passes; always inference mode (the threat model)."""

  def __init__(self, model_fn: Callable):
    self._fn = tf.function(model_fn, reduce_retracing=True)

  def __call__(self, x, training=False):
    del training  # Attacks always run the model in inference mode.
    return self._fn(x)


class ArtRunner:
  """The attacks of an `ArtPlan`, built once on one model.

  Args:
    model_fn: images [B, H, W, C] in [0, 1] -> logits [B, K], inference mode.
    input_shape: (H, W, C).
    num_classes: K.
    plan: the attacks to build.
    batch_size: batch size handed to ART.
  """

  def __init__(self, model_fn: Callable, input_shape: tuple, num_classes: int, plan: ArtPlan, batch_size: int):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # ART warns at import that PyTorch is missing; we do not use it.
      import keras
      from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
      from art.estimators.classification import TensorFlowV2Classifier
    self._classifier = TensorFlowV2Classifier(
        model=_ArtModel(model_fn), nb_classes=num_classes, input_shape=tuple(input_shape), clip_values=(0.0, 1.0),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    self._attacks = {}
    for spec in plan.attacks:
      s = spec.settings
      if spec.name == "square":
        self._attacks[spec.label] = SquareAttack(
            self._classifier, norm=np.inf, eps=s["eps"], max_iter=s["max_iter"], p_init=s["p_init"],
            nb_restarts=s["nb_restarts"], batch_size=batch_size, verbose=False)
      else:
        self._attacks[spec.label] = AutoProjectedGradientDescent(
            self._classifier, norm=np.inf, eps=s["eps"], eps_step=s["eps_step"], max_iter=s["max_iter"],
            targeted=s["targeted"], nb_random_init=s["nb_random_init"], batch_size=batch_size,
            loss_type=s["loss_type"], verbose=False)
    self._specs = {spec.label: spec for spec in plan.attacks}

  def run(self, label: str, x: np.ndarray, y: np.ndarray, clean_logits: np.ndarray, predict: Callable) -> np.ndarray:
    """Adversarial examples for the examples the model classifies correctly (others: x unchanged).

    Args:
      label: the attack's label in the plan.
      x: float32 [B, H, W, C] pixels.
      y: int true labels [B].
      clean_logits: [B, K] logits of x (correct examples and APGD-T's targets).
      predict: images -> logits.

    Returns:
      x_adv [B, H, W, C] float32.
    """
    # ART's own compiled forward pass sees batches of every size (Square queries shrinking subsets)
    # and TF logs a retracing warning for each; they say nothing about the evaluation.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
      return self._run(label, x, y, clean_logits, predict)
    finally:
      logger.setLevel(level)

  def _run(self, label, x, y, clean_logits, predict):
    spec, attack = self._specs[label], self._attacks[label]
    x_adv = x.copy()
    # Only correct examples are attacked: a targeted run on a misclassified one could push it to the
    # true class and report an accuracy above the clean one.
    todo = np.argmax(clean_logits, -1) == y
    if spec.name != "apgd_t":
      if todo.any():
        x_adv[todo] = attack.generate(x=x[todo], y=y[todo]).astype(np.float32)
      return x_adv
    ranked = np.argsort(-clean_logits, axis=-1)
    for rank in range(1, spec.settings["n_target_classes"] + 1):
      if not todo.any():
        break
      # As AutoAttack: each target run starts from x and only examples no earlier run fooled go on.
      cand = attack.generate(x=x[todo], y=ranked[todo, rank]).astype(np.float32)
      fooled = np.argmax(predict(cand), -1) != y[todo]
      idx = np.flatnonzero(todo)
      x_adv[idx[fooled]] = cand[fooled]
      todo[idx[fooled]] = False
    return x_adv
