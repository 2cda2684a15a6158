"""Adversarial training of one network under `model.fit`, optionally distilled from a teacher.

One trainer serves both stages: robust teachers (no teacher of their own) and the retrained
student (a robust objective of `robust.objectives`, plus KL and cross-layer attention distillation
with a fixed tutor map). The per-replica step is `RobustTrainer.step`, so a custom `strategy.run`
loop (multi-worker) can call exactly what `fit` calls.
"""

import dataclasses
from typing import Optional

import keras
from keras import ops

from rnascl_tf.robust import attacks
from rnascl_tf.robust import objectives as objectives_lib
from rnascl_tf.distill import losses
from rnascl_tf.configs import DistillConfig, RobustConfig
from rnascl_tf.runtime.xla import NestedXlaJit


class RobustTrainer(NestedXlaJit, keras.Model):
  """Wraps `net` and trains it adversarially in pixel space.

  The attacker always runs `net` in inference mode (docs/method.md section 3); losses are scaled with
  `losses.replica_mean` so 1 and N replicas give the same update.

  The objective (`robust.objectives`) sets the attack and the outer loss; without one, the mode of
  `robust` does ("pgd" -> pgd_at, ...). Distillation terms (lambda_kd KL and gamma_cl cross-layer,
  when `teacher` and `distill` are given) are taken at the objective's `kd_point`. The teacher runs
  frozen, in inference mode, outside the tape (inside the attack only for AdaAD).

  Args:
    net: the network (takes [0, 1] pixels, returns logits; `call_with_taps` for gamma_cl > 0).
    robust: adversarial-training settings (eps, step size, steps, TRADES beta).
    seed: seed of the trainer's random generator (the random starts of the attacks).
    teacher: optional `teacher_io.TeacherTaps` to distil from (needed by ard, rslad, adaad).
    distill: distillation weights and tutor map (needed with `teacher`).
    objective: a base loss of `objectives.BASE_LOSSES` (default: the one of `robust.mode`).
    weights: the base losses' weights (default: `robust.trades_beta` and the papers' defaults).

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
               distill: Optional[DistillConfig] = None, objective: Optional[str] = None,
               weights: Optional[objectives_lib.Weights] = None, **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.robust = robust
    self.objective = objective or objectives_lib.MODE_LOSSES[robust.mode]
    self.base = objectives_lib.base_loss(self.objective)
    self.loss_weights = weights or objectives_lib.Weights(trades_beta=robust.trades_beta)
    if self.loss_weights.trades_beta != robust.trades_beta:
      self.loss_weights = dataclasses.replace(self.loss_weights, trades_beta=robust.trades_beta)
    self._teacher = teacher  # Plain object: the frozen teacher is neither trained nor checkpointed here.
    self.distill = distill if teacher is not None else None
    if teacher is None and self.base.teacher_points(self.loss_weights):
      raise ValueError(f"objective {self.objective} needs a teacher")
    if self.distill and self.distill.gamma_cl and not self.distill.tutor_map:
      raise ValueError("gamma_cl > 0 needs a tutor_map")
    self.seed_generator = keras.random.SeedGenerator(seed)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="acc")
    self.adv_acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")
    self.kd_tracker = keras.metrics.Mean(name="kl")
    self.cl_tracker = keras.metrics.Mean(name="cl")

  @property
  def _uses_kd(self) -> bool:
    return self.distill is not None and self.distill.lambda_kd > 0

  @property
  def _uses_cl(self) -> bool:
    return self.distill is not None and bool(self.distill.gamma_cl)

  def _points(self):
    """(student points, teacher points) this step evaluates, in a fixed order (clean first)."""
    s_points = set(self.base.student_points(self.loss_weights))
    t_points = set(self.base.teacher_points(self.loss_weights))
    if self._uses_kd or self._uses_cl:
      s_points.add(self.base.kd_point[0])
      t_points.add(self.base.kd_point[1])
    order = ("clean", "adv")
    return tuple(p for p in order if p in s_points), tuple(p for p in order if p in t_points)

  @property
  def metrics(self):
    # Only the accuracies the objective really computes: PGD-AT never runs the net on clean inputs.
    s_points, _ = self._points()
    trackers = [self.loss_tracker]
    if "clean" in s_points:
      trackers.append(self.acc_tracker)
    if "adv" in s_points:
      trackers.append(self.adv_acc_tracker)
    if self._uses_kd:
      trackers.append(self.kd_tracker)
    if self._uses_cl:
      trackers.append(self.cl_tracker)
    return trackers

  def call(self, x, training=False):
    return self.net(x, training=training)

  def _infer(self, x):
    return self.net(x, training=False)

  def _teacher_logits(self, x):
    return self._teacher(x)[0]

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

  def adversarial_examples(self, x, y, teacher_clean_logits=None):
    """Training-time adversarial examples of the objective's attack (None when it has none).

    Args:
      x: clean pixels [B, H, W, C].
      y: integer labels [B].
      teacher_clean_logits: the teacher's logits at x (RSLAD's attack target).
    """
    r = self.robust
    attack = self.base.attack
    if attack == "ce":
      # Our seeded random start (cleverhans' own uses unseeded tf.random ops), then cleverhans' steps.
      x_start = x + self._uniform_noise(x, r.eps)
      return attacks.generate(self._infer, x, y, self._attack_config("pgd", r.steps), x_start=x_start)
    small_start = lambda: x + self._uniform_noise(x, min(attacks.TRADES_START_RADIUS, r.eps))  # noqa: E731
    if attack in ("self_kl", "teacher_kl"):
      logits = self._infer(x) if attack == "self_kl" else teacher_clean_logits
      clean_probs = ops.softmax(ops.cast(logits, "float32"))
      return attacks.generate(self._infer, x, clean_probs, self._attack_config("trades_kl", r.steps),
                              x_start=small_start())
    if attack == "disagreement":
      pair = attacks.pair_logits(self._infer, self._teacher_logits)
      return attacks.generate(pair, x, y, self._attack_config("disagreement_kl", r.steps), x_start=small_start())
    if attack == "fast_fgsm":
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

  def _distillation(self, logits, taps, t_logits, t_energies):
    """Per-example lambda * KL + gamma * L_CL against the frozen teacher outputs at the kd point."""
    d = self.distill
    per_example = 0.0
    if self._uses_kd:
      kl = losses.kd_kl(t_logits, logits, temperature=d.kd_temperature)
      self.kd_tracker.update_state(ops.mean(kl))
      per_example = d.lambda_kd * kl
    if self._uses_cl:
      cl = losses.fixed_tutor_loss(losses.layer_distances_from_energies(taps, t_energies, d.cl_grid), d.tutor_map)
      self.cl_tracker.update_state(ops.mean(cl))
      per_example = per_example + d.gamma_cl * cl
    return per_example

  def _teacher_outputs(self, x, x_adv, t_points):
    """Teacher logits by point, and its energy maps at the kd point (frozen: no gradient)."""
    inputs = {"clean": x, "adv": x_adv}
    both = ops.concatenate([x, x_adv], axis=0) if len(t_points) == 2 else inputs[t_points[0]]
    t_logits, t_acts = self._teacher(both)
    n = ops.shape(x)[0]
    split = lambda t, p: t if len(t_points) == 1 else (t[:n] if p == "clean" else t[n:])  # noqa: E731
    logits = {p: ops.stop_gradient(split(t_logits, p)) for p in t_points}
    energies = None
    if self._uses_cl:
      # Only the teacher's energy maps are kept, not its activations (see losses.masked_tap).
      point = self.base.kd_point[1]
      energies = [losses.channel_energy(ops.stop_gradient(split(a, point))) for a in t_acts]
    return logits, energies

  def step(self, x, y):
    """One per-replica training step; returns the scaled loss (for logs: times the replica count)."""
    s_points, t_points = self._points()
    teacher, t_energies = {}, None
    if "clean" in t_points and self.base.attack == "teacher_kl":
      # RSLAD attacks towards the teacher's clean prediction: computed once, before the attack.
      teacher, t_energies = self._teacher_outputs(x, None, ("clean",))
    x_adv = self.adversarial_examples(x, y, teacher.get("clean"))
    if x_adv is not None:
      x_adv = ops.stop_gradient(x_adv)
    if t_points and not teacher:
      teacher, t_energies = self._teacher_outputs(x, x_adv, t_points)
    s_point = self.base.kd_point[0]
    with _tape() as tape:
      # One forward over all points keeps BatchNorm statistics joint (as TRADES does).
      inputs = {"clean": x, "adv": x_adv}
      batch = inputs[s_points[0]] if len(s_points) == 1 else ops.concatenate([x, x_adv], axis=0)
      if self._uses_cl:
        out, taps = self.net.call_with_taps(batch, training=True, tap_energies=True)
      else:
        out, taps = self.net(batch, training=True), None
      n = ops.shape(x)[0]
      if len(s_points) == 1:
        student = {s_points[0]: out}
      else:
        student = {"clean": out[:n], "adv": out[n:]}
        if taps is not None:
          taps = [t[:n] if s_point == "clean" else t[n:] for t in taps]
      per_example = objectives_lib.per_example_loss(self.objective, y, student, teacher, self.loss_weights)
      if self._uses_kd or self._uses_cl:
        per_example = per_example + self._distillation(
            student[s_point], taps, teacher.get(self.base.kd_point[1]), t_energies)
      loss = losses.replica_mean(per_example)
      # fp16: a LossScaleOptimizer (`driver.Session.loss_scaled`) multiplies the loss here and divides the
      # gradients in `apply`; other optimisers return the loss unchanged.
      scaled_loss = self.optimizer.scale_loss(loss)
    variables = self.net.trainable_variables
    grads = tape.gradient(scaled_loss, variables)
    self.optimizer.apply(grads, variables)
    self.loss_tracker.update_state(ops.mean(per_example))
    if "clean" in student:
      self.acc_tracker.update_state(y, student["clean"])
    if "adv" in student:
      self.adv_acc_tracker.update_state(y, student["adv"])
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
