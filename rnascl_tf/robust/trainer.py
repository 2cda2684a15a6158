"""Adversarial training of one network under `model.fit`, optionally distilled from a teacher.

One trainer serves both stages: robust teachers (no teacher of their own) and the retrained
student (KL and cross-layer attention distillation with a fixed tutor map). The per-replica step is
`RobustTrainer.step`, so a custom `strategy.run` loop (multi-worker) can call exactly what `fit` calls.
"""

import dataclasses
from typing import Optional, Sequence

import keras
from keras import ops

from rnascl_tf.robust import attacks
from rnascl_tf.distill import losses
from rnascl_tf.configs import DistillConfig, RobustConfig
from rnascl_tf.runtime.xla import NestedXlaJit


class RobustTrainer(NestedXlaJit, keras.Model):
  """Wraps `net` and trains it adversarially in pixel space.

  The attacker always runs `net` in inference mode (docs/method.md section 3); losses are scaled with
  `losses.replica_mean` so 1 and N replicas give the same update.

  Distillation (when `teacher` is given) is computed on the inputs the student trains on: clean
  images for standard and TRADES training, adversarial ones for PGD-AT and fast FGSM. The teacher
  runs frozen, in inference mode, outside the tape.

  Args:
    net: the network (takes [0, 1] pixels, returns logits; `call_with_taps` for gamma_cl > 0).
    robust: adversarial-training settings.
    seed: seed of the trainer's random generator (the random starts of PGD, TRADES and fast FGSM).
    teacher: optional `teacher_io.TeacherTaps` to distil from.
    distill: distillation weights and tutor map (needed with `teacher`).

  Example:
  >>> import numpy as np
  >>> from rnascl_tf.models.teachers import build_teacher
  >>> net = build_teacher("small_cnn", (8, 8, 1), 10, [0.5], [0.25], width_multiplier=0.25)
  >>> trainer = RobustTrainer(net, RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=2))
  >>> optimizer = keras.optimizers.SGD(0.1)
  >>> optimizer.build(net.trainable_variables)
  >>> trainer.compile(optimizer=optimizer)
  >>> x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype("float32")
  >>> y = np.arange(8) % 10
  >>> sorted(trainer.fit(x, y, batch_size=4, epochs=1, verbose=0).history)
  ['adv_acc', 'loss']
  """

  def __init__(self, net: keras.Model, robust: RobustConfig, seed: int = 0, teacher=None,
               distill: Optional[DistillConfig] = None, **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.robust = robust
    self._teacher = teacher  # Plain object: the frozen teacher is neither trained nor checkpointed here.
    self.distill = distill if teacher is not None else None
    if self.distill and self.distill.gamma_cl > 0 and not self.distill.tutor_map:
      raise ValueError("gamma_cl > 0 needs a tutor_map")
    self.seed_generator = keras.random.SeedGenerator(seed)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="acc")
    self.adv_acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")
    self.kd_tracker = keras.metrics.Mean(name="kl")
    self.cl_tracker = keras.metrics.Mean(name="cl")

  @property
  def metrics(self):
    # Only the accuracies a mode really computes: PGD-AT never runs the net on clean inputs.
    mode = self.robust.mode
    trackers = [self.loss_tracker]
    if mode in ("standard", "trades"):
      trackers.append(self.acc_tracker)
    if mode != "standard":
      trackers.append(self.adv_acc_tracker)
    if self.distill is not None:
      trackers.append(self.kd_tracker)
      if self.distill.gamma_cl > 0:
        trackers.append(self.cl_tracker)
    return trackers

  def call(self, x, training=False):
    return self.net(x, training=training)

  def _infer(self, x):
    return self.net(x, training=False)

  def _attack_config(self, name: str, steps: int) -> attacks.AttackConfig:
    r = self.robust
    return attacks.AttackConfig(name=name, eps=r.eps, step_size=r.step_size, steps=steps, rand_init=True)

  def _uniform_noise(self, x, radius: float):
    """Uniform noise in [-radius, radius] shaped like this replica's batch `x`, seeded and replica-exact.

    Drawn for the whole global batch from the trainer's SeedGenerator (same state on every replica,
    checkpointed) and sliced at this replica's position, so 1 device and N replicas (each with an
    equal share of the global batch, in order) start from the same points, and a resumed run
    continues the same sequence.
    """
    import tensorflow as tf  # The replica context is tf.distribute's.
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    index = ctx.replica_id_in_sync_group if ctx is not None else 0
    local = tf.shape(x)[0]
    shape = tf.concat([[local * replicas], tf.shape(x)[1:]], axis=0)
    noise = keras.random.uniform(shape, -radius, radius, seed=self.seed_generator)
    return noise[index * local:(index + 1) * local]

  def adversarial_examples(self, x, y):
    """Training-time adversarial examples for the configured mode (None for standard training)."""
    r = self.robust
    if r.mode == "pgd":
      # Our seeded random start (cleverhans' own uses unseeded tf.random ops), then cleverhans' steps.
      x_start = x + self._uniform_noise(x, r.eps)
      return attacks.generate(self._infer, x, y, self._attack_config("pgd", r.steps), x_start=x_start)
    if r.mode == "trades":
      clean_probs = ops.softmax(self._infer(x))
      x_start = x + self._uniform_noise(x, min(attacks.TRADES_START_RADIUS, r.eps))
      return attacks.generate(self._infer, x, clean_probs, self._attack_config("trades_kl", r.steps),
                              x_start=x_start)
    if r.mode == "fast_fgsm":
      # Wong et al. 2020: uniform random start in the eps-ball, one FGSM step of 1.25 eps, projected.
      delta = self._uniform_noise(x, r.eps)
      x0 = ops.clip(x + delta, 0.0, 1.0)
      step = attacks.AttackConfig(name="fgsm", eps=1.25 * r.eps, rand_init=False)
      x1 = attacks.generate(self._infer, x0, y, step)
      return ops.clip(ops.clip(x1, x - r.eps, x + r.eps), 0.0, 1.0)
    return None

  def _forward(self, x, with_taps: bool):
    if with_taps:
      return self.net.call_with_taps(x, training=True, tap_energies=True)
    return self.net(x, training=True), None

  def _distillation(self, logits, taps, t_out):
    """Per-example lambda * KL + gamma * L_CL against the frozen teacher outputs `t_out`."""
    d = self.distill
    t_logits, t_energies = t_out
    kl = losses.kd_kl(t_logits, logits, temperature=d.kd_temperature)
    self.kd_tracker.update_state(ops.mean(kl))
    per_example = d.lambda_kd * kl
    if d.gamma_cl > 0:
      cl = losses.fixed_tutor_loss(losses.layer_distances_from_energies(taps, t_energies, d.cl_grid), d.tutor_map)
      self.cl_tracker.update_state(ops.mean(cl))
      per_example = per_example + d.gamma_cl * cl
    return per_example

  def step(self, x, y):
    """One per-replica training step; returns the scaled loss (for logs: times the replica count)."""
    r = self.robust
    x_adv = self.adversarial_examples(x, y)
    if x_adv is not None:
      x_adv = ops.stop_gradient(x_adv)
    distil = self.distill is not None
    with_taps = distil and self.distill.gamma_cl > 0
    t_out = None
    if distil:
      # Distil on what the student is trained on; the teacher is frozen and outside the tape.
      x_kd = x if r.mode in ("standard", "trades") else x_adv
      t_logits, t_acts = self._teacher(x_kd)
      # Only the teacher's energy maps are kept, not its activations (see losses.masked_tap).
      t_out = (ops.stop_gradient(t_logits), [losses.channel_energy(ops.stop_gradient(a)) for a in t_acts])
    with _tape() as tape:
      if r.mode == "standard":
        logits, taps = self._forward(x, with_taps)
        per_example = losses.cross_entropy(y, logits)
        adv_logits, kd_logits = None, logits
      elif r.mode == "trades":
        # One forward on clean and adversarial halves together keeps BatchNorm statistics joint.
        n = ops.shape(x)[0]
        both, both_taps = self._forward(ops.concatenate([x, x_adv], axis=0), with_taps)
        logits, adv_logits = both[:n], both[n:]
        taps = None if both_taps is None else [t[:n] for t in both_taps]
        per_example = (losses.cross_entropy(y, logits)
                       + r.trades_beta * losses.kd_kl(logits, adv_logits, temperature=1.0))
        kd_logits = logits
      else:
        adv_logits, taps = self._forward(x_adv, with_taps)
        logits, kd_logits = None, adv_logits
        per_example = losses.cross_entropy(y, adv_logits)
      if distil:
        per_example = per_example + self._distillation(kd_logits, taps, t_out)
      loss = losses.replica_mean(per_example)
      # fp16: a LossScaleOptimizer (`driver.Session.loss_scaled`) multiplies the loss here and divides the
      # gradients in `apply`; other optimisers return the loss unchanged.
      scaled_loss = self.optimizer.scale_loss(loss)
    variables = self.net.trainable_variables
    grads = tape.gradient(scaled_loss, variables)
    self.optimizer.apply(grads, variables)
    self.loss_tracker.update_state(ops.mean(per_example))
    if logits is not None:
      self.acc_tracker.update_state(y, logits)
    if adv_logits is not None:
      self.adv_acc_tracker.update_state(y, adv_logits)
    return loss

  def train_step(self, data):
    x, y = data
    self.step(x, y)
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    x, y = data
    logits = self.net(x, training=False)
    self.loss_tracker.update_state(ops.mean(losses.cross_entropy(y, logits)))
    self.acc_tracker.update_state(y, logits)
    return {m.name: m.result() for m in (self.loss_tracker, self.acc_tracker)}


def _tape():
  import tensorflow as tf  # The custom step is TF-backend specific (GradientTape).
  return tf.GradientTape()
