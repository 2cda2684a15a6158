"""White-box attacks (cleverhans backend) in pixel space: `generate`, their losses, perturbation sizes.

Threat model: models take pixel images in [0, 1] and normalise inside;
eps, step sizes and clipping are in pixel units; the attacked `model_fn` must run the model with
`training=False`. Every attack gets the TRUE labels (never `y=None`, which would attack the model's
own predictions). Under mixed precision the model casts the pixels to its compute dtype inside (its
first layer); x, the gradient at x, the steps, the projection onto the eps-ball and the clipping stay
float32 here, so eps holds exactly; this module's losses cast the logits to float32.

cleverhans traps handled here (checked on cleverhans 4.0.0 / TF 2.21):
- `cleverhans.tf2.utils.compute_gradient` is a module-level `tf.function` that takes `model_fn` and
  `loss_fn` as Python arguments, so it retraces for every new callable object. Pass the same
  `model_fn` object to every `generate` call; this module only hands it module-level loss functions.
- `projected_gradient_descent` checks `eps_iter <= eps` with a bare `assert`; iterative attacks here
  use min(step_size, eps) as their step (the label reports the step actually used), and eps == 0
  returns the input without calling cleverhans at all.
- `momentum_iterative_method` defaults to `sanity_checks=True`, which crashes inside `tf.function`
  (numpy on symbolic tensors); it is always called with `sanity_checks=False`.
"""

from typing import Callable

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
from cleverhans.tf2.utils import clip_eta

from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.attack_specs import SMALL_START_ATTACKS, TRADES_START_RADIUS, AttackConfig


def margin_loss(labels, logits):
  """CW-inf margin, maximised by the attack: max_{j != y} z_j - z_y per example.

  Positive exactly when the example is misclassified. Unlike Madry et al.'s clamped version
  (-relu(z_y - max_j z_j + 50)) it is not clamped, which changes nothing for an attack that starts
  below the clamp. Named `labels`/`logits` because cleverhans calls `loss_fn(labels=..., logits=...)`.

  Args:
    labels: int labels [B].
    logits: [B, K].

  Returns:
    float32 [B].
  """
  logits = tf.cast(logits, tf.float32)
  mask = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], on_value=True, off_value=False)
  true_logit = tf.reduce_sum(tf.where(mask, logits, tf.zeros_like(logits)), axis=-1)
  best_other = tf.reduce_max(tf.where(mask, tf.fill(tf.shape(logits), logits.dtype.min), logits), axis=-1)
  return best_other - true_logit


def trades_kl_loss(clean_probs, logits):
  """KL(clean || adv) per example, the quantity TRADES' inner maximisation ascends.

  Args:
    clean_probs: [B, K] clean class probabilities (constants: no gradient flows into them).
    logits: [B, K] logits at the perturbed input.

  Returns:
    float32 [B]: sum_k p_k (log p_k - log softmax(logits)_k), with 0 log 0 = 0.
  """
  p = tf.stop_gradient(tf.cast(clean_probs, tf.float32))
  log_q = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  return tf.reduce_sum(tf.math.xlogy(p, p) - p * log_q, axis=-1)


def _ce_loss(labels, logits):
  """Per-example cross-entropy (cleverhans' default loss, with float32 logits for mixed precision)."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))


def _trades_loss_fn(labels, logits):
  """`trades_kl_loss` under the keyword names cleverhans uses (`labels` holds clean probabilities)."""
  return trades_kl_loss(labels, logits)


def disagreement_kl_loss(labels, logits):
  """KL(p_T || p_S) per example at the perturbed input, AdaAD's inner objective (Huang et al. 2023).

  Args:
    labels: unused (cleverhans passes them); the target is the teacher's prediction at the same input.
    logits: [B, 2K]: the student's logits, then the teacher's, at the perturbed input (see
      `pair_logits`); the gradient flows through both.

  Returns:
    float32 [B].
  """
  del labels
  logits = tf.cast(logits, tf.float32)
  student, teacher = tf.split(logits, 2, axis=-1)
  log_p = tf.nn.log_softmax(teacher, axis=-1)
  return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(student, axis=-1)), axis=-1)


def pair_logits(student_fn: Callable, teacher_fn: Callable) -> Callable:
  """images -> [student logits, teacher logits] (float32, [B, 2K]): the model a disagreement attack runs."""

  def fn(images):
    return tf.concat([tf.cast(student_fn(images), tf.float32), tf.cast(teacher_fn(images), tf.float32)], axis=-1)

  return fn


_LOSSES = {"pgd": _ce_loss, "cw_inf": margin_loss, "trades_kl": _trades_loss_fn,
           "disagreement_kl": disagreement_kl_loss}


def _attack_once(model_fn, x, y, config: AttackConfig):
  """One cleverhans run of `config` (no restarts, eps > 0)."""
  norm = np.inf if config.norm == "inf" else 2
  common = dict(clip_min=0.0, clip_max=1.0, y=y)
  step = config.effective_step_size
  if config.name == "fgsm":
    return fast_gradient_method(model_fn, x, config.eps, norm, loss_fn=_ce_loss, **common)
  if config.name == "mifgsm":
    return momentum_iterative_method(model_fn, x, eps=config.eps, eps_iter=step, nb_iter=config.steps,
                                     norm=norm, decay_factor=config.decay, sanity_checks=False, **common)
  loss_fn = _LOSSES[config.name]
  rand_minmax = min(TRADES_START_RADIUS, config.eps) if config.name in SMALL_START_ATTACKS else config.eps
  return projected_gradient_descent(
      model_fn, x, config.eps, step, config.steps, norm, loss_fn=loss_fn, rand_init=config.rand_init,
      rand_minmax=rand_minmax, sanity_checks=False, **common)


def _pgd_from(model_fn, x, x_start, y, config: AttackConfig):
  """cleverhans' PGD iterations from `x_start` (projected around `x`) instead of its random start."""
  norm = np.inf if config.norm == "inf" else 2
  loss_fn = _LOSSES[config.name]
  adv = tf.clip_by_value(x + clip_eta(x_start - x, norm, config.eps), 0.0, 1.0)
  for _ in range(config.steps):
    adv = fast_gradient_method(model_fn, adv, config.effective_step_size, norm, loss_fn, clip_min=0.0, clip_max=1.0,
                               y=y)
    adv = tf.clip_by_value(x + clip_eta(adv - x, norm, config.eps), 0.0, 1.0)
  return adv


def _check_inputs(x, y, config: AttackConfig):
  """Static shape checks, plus a [0, 1] range check when running eagerly (catches 0-255 pipelines)."""
  if x.shape.rank != 4:
    raise UserInputError(f"attack {config.name}: x must be images [B, H, W, C], got shape {x.shape}")
  if config.name == "trades_kl":
    if y.shape.rank != 2 or not y.dtype.is_floating:
      raise UserInputError(
          f"attack trades_kl: y must be the clean class probabilities [B, K] (float), got "
          f"{y.dtype.name} {y.shape}")
  elif y.shape.rank != 1 or not y.dtype.is_integer:
    raise UserInputError(
        f"attack {config.name}: y must be the TRUE integer labels [B], got {y.dtype.name} {y.shape}")
  if tf.executing_eagerly():
    check_pixel_range(x, f"attack {config.name}")


def check_pixel_range(x, where: str) -> None:
  """Checks that concrete images are pixels in [0, 1] (a 0-255 or normalised pipeline breaks the threat model).

  Args:
    x: images (numpy array or eager tensor).
    where: the caller, named in the error.

  Raises:
    UserInputError: a value outside [0, 1].
  """
  if tf.size(x) == 0:
    return
  lo, hi = float(tf.reduce_min(x)), float(tf.reduce_max(x))
  if lo < 0.0 or hi > 1.0:
    raise UserInputError(
        f"{where}: x must be pixels in [0, 1], got values in [{lo:g}, {hi:g}] "
        "(is the input pipeline missing /255, or normalising outside the model?)")


def generate(model_fn: Callable, x, y, config: AttackConfig, x_start=None):
  """Adversarial examples for `x` under `config`, within eps of x (in the attack's norm) and in [0, 1].

  Works eagerly, inside `tf.function` (e.g. an adversarial-training `train_step`) and inside
  `strategy.run`. cleverhans' gradient helper is a `tf.function` keyed on `model_fn`: reuse one
  `model_fn` object across calls, or every eager call retraces.

  Args:
    model_fn: callable images -> logits; the caller wraps the model with `training=False`.
    x: [B, H, W, C] float32 pixels in [0, 1].
    y: the TRUE int labels [B]; for "trades_kl" the clean probabilities [B, K] of the model (or the
      teacher's, for RSLAD); "disagreement_kl" (with `model_fn` from `pair_logits`) ignores them.
    config: the attack.
    x_start: optional start point of pgd / cw_inf / trades_kl instead of cleverhans' random start
      (cleverhans draws it with unseeded `tf.random.uniform`: not reproducible across replicas or a
      resume). The steps are cleverhans' (its FGM step, projection onto the eps ball around `x`,
      clipping to [0, 1]); `x_start` itself is projected first. Needs `restarts == 1`.

  Returns:
    float32 x_adv shaped like x, under `stop_gradient` (a constant for the training step, as in
    TRADES / Madry et al.), within eps up to float32 rounding (~1e-7). eps == 0 returns x unchanged.

  Raises:
    UserInputError: x not [B, H, W, C]; y not int labels [B] (probabilities [B, K] for trades_kl);
      eagerly, x outside [0, 1].
  """
  x = tf.convert_to_tensor(x, tf.float32)
  y = tf.convert_to_tensor(y)
  _check_inputs(x, y, config)
  if config.eps == 0:
    # cleverhans asserts step <= eps and its L2 projection divides by norms; nothing to attack anyway.
    return tf.identity(x)
  y = tf.cast(y, tf.float32) if config.name == "trades_kl" else tf.cast(y, tf.int32)
  if x_start is not None:
    if config.name not in ("pgd", "cw_inf", *SMALL_START_ATTACKS) or config.restarts > 1:
      raise ValueError(f"x_start is for one run of pgd, cw_inf, trades_kl or disagreement_kl, not {config.label()}")
    return tf.stop_gradient(_pgd_from(model_fn, x, tf.convert_to_tensor(x_start, tf.float32), y, config))
  best = _attack_once(model_fn, x, y, config)
  if config.restarts > 1:
    loss_fn = margin_loss if config.name == "cw_inf" else _ce_loss
    logits = model_fn(best)
    best_fooled = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), y)
    best_loss = loss_fn(y, logits)
    for _ in range(config.restarts - 1):
      cand = _attack_once(model_fn, x, y, config)
      logits = model_fn(cand)
      fooled = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), y)
      loss = loss_fn(y, logits)
      # Keep the first run that fools the model; among runs that do not, the highest loss. So the
      # result is never more robust than any single run.
      take = tf.logical_and(tf.logical_not(best_fooled), tf.logical_or(fooled, loss > best_loss))
      best = tf.where(take[:, None, None, None], cand, best)
      best_loss = tf.where(take, loss, best_loss)
      best_fooled = tf.logical_or(best_fooled, fooled)
  return tf.stop_gradient(best)


def input_gradient_status(model_fn: Callable, x, seed: int = 0) -> str:
  """Whether gradient attacks can work on `model_fn` at all: its input gradient on the images `x`.

  The gradient of a seeded random projection of the logits (a sum of logits could cancel, and the
  gradient of a loss vanishes where softmax saturates) is taken with respect to `x`.

  Args:
    model_fn: images -> logits, inference mode.
    x: a few images [B, H, W, C] in [0, 1] (any: the answer depends on the model's graph).
    seed: seed of the projection.

  Returns:
    "present"; "zero" when it is exactly zero everywhere (e.g. a quantisation step under
    `tf.stop_gradient`); "absent" when TF has none (a step without a gradient, e.g. `tf.round`, on
    the input path): cleverhans and ART would fail on it, see `with_zero_gradient`.

  Example:
  >>> x = tf.fill([2, 4, 4, 1], 0.5)
  >>> [input_gradient_status(fn, x) for fn in (lambda v: tf.reshape(v, [2, -1])[:, :3] * 2.0,
  ...                                          lambda v: tf.reshape(tf.round(v * 255.0), [2, -1])[:, :3])]
  ['present', 'absent']
  """
  x = tf.convert_to_tensor(x, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    logits = tf.cast(model_fn(x), tf.float32)
    objective = tf.reduce_sum(logits * tf.random.stateless_normal(tf.shape(logits), seed=[seed, 7]))
  grad = tape.gradient(objective, x)
  if grad is None:
    return "absent"
  return "present" if bool(tf.reduce_any(tf.not_equal(grad, 0.0))) else "zero"


def with_zero_gradient(model_fn: Callable) -> Callable:
  """`model_fn` whose input gradient is zero where it has none, with the same logits.

  A model without an input gradient makes cleverhans fail (AttributeError on a None gradient) and
  ART too; with a zero one the white-box attacks run and cannot move, as on any model that masks
  its gradient, and the evaluation's checks report it.
  """
  def fn(images):
    logits = model_fn(images)
    # Pixels are finite (checked), so 0 * x is exactly 0: the logits are unchanged.
    zero = tf.reduce_sum(tf.reshape(tf.cast(images, logits.dtype), [tf.shape(images)[0], -1]), -1,
                         keepdims=True) * 0.0
    return logits + zero
  return fn


def perturbation_norm(x_adv, x, norm: str):
  """Per-example size of x_adv - x in `norm` ("inf" or "l2").

  Args:
    x_adv: [B, ...] perturbed images.
    x: [B, ...] clean images.
    norm: "inf" or "l2".

  Returns:
    float32 [B].
  """
  delta = tf.reshape(tf.cast(x_adv, tf.float32) - tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
  if norm == "inf":
    return tf.reduce_max(tf.abs(delta), axis=-1)
  return tf.norm(delta, axis=-1)
