"""Adversarial training of one network under `model.fit`: standard, PGD-AT, TRADES, fast FGSM.

Used to train robust teachers. The per-replica step is `RobustTrainer.step`, so a custom
`strategy.run` loop (multi-worker) can call exactly what `fit` calls.
"""

import keras
from keras import ops

from rnascl_tf import attacks
from rnascl_tf import losses
from rnascl_tf.config import RobustConfig


class RobustTrainer(keras.Model):
  """Wraps `net` and trains it adversarially in pixel space.

  The attacker always runs `net` in inference mode (METHOD.md section 3); losses are scaled with
  `losses.replica_mean` so 1 and N replicas give the same update.

  Args:
    net: the network (takes [0, 1] pixels, returns logits).
    robust: adversarial-training settings.
    seed: seed of the trainer's random generator (fast-FGSM random start).

  Example:
  >>> trainer = RobustTrainer(net, RobustConfig(mode="pgd", eps=0.1, steps=3))
  >>> trainer.compile(optimizer=keras.optimizers.SGD(0.1))
  >>> trainer.fit(train_ds, epochs=1)
  """

  def __init__(self, net: keras.Model, robust: RobustConfig, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.net = net
    self.robust = robust
    self.seed_generator = keras.random.SeedGenerator(seed)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="acc")
    self.adv_acc_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_acc")

  @property
  def metrics(self):
    # Only the accuracies a mode really computes: PGD-AT never runs the net on clean inputs.
    mode = self.robust.mode
    trackers = [self.loss_tracker]
    if mode in ("standard", "trades"):
      trackers.append(self.acc_tracker)
    if mode != "standard":
      trackers.append(self.adv_acc_tracker)
    return trackers

  def call(self, x, training=False):
    return self.net(x, training=training)

  def _infer(self, x):
    return self.net(x, training=False)

  def _attack_config(self, name: str, steps: int) -> attacks.AttackConfig:
    r = self.robust
    return attacks.AttackConfig(name=name, eps=r.eps, step_size=r.step_size, steps=steps, rand_init=True)

  def adversarial_examples(self, x, y):
    """Training-time adversarial examples for the configured mode (None for standard training)."""
    r = self.robust
    if r.mode == "pgd":
      return attacks.generate(self._infer, x, y, self._attack_config("pgd", r.steps))
    if r.mode == "trades":
      clean_probs = ops.softmax(self._infer(x))
      return attacks.generate(self._infer, x, clean_probs, self._attack_config("trades_kl", r.steps))
    if r.mode == "fast_fgsm":
      # Wong et al. 2020: uniform random start in the eps-ball, one FGSM step of 1.25 eps, projected.
      delta = keras.random.uniform(ops.shape(x), -r.eps, r.eps, seed=self.seed_generator)
      x0 = ops.clip(x + delta, 0.0, 1.0)
      step = attacks.AttackConfig(name="fgsm", eps=1.25 * r.eps, rand_init=False)
      x1 = attacks.generate(self._infer, x0, y, step)
      return ops.clip(ops.clip(x1, x - r.eps, x + r.eps), 0.0, 1.0)
    return None

  def step(self, x, y):
    """One per-replica training step; returns the scaled loss (for logs: times the replica count)."""
    r = self.robust
    x_adv = self.adversarial_examples(x, y)
    if x_adv is not None:
      x_adv = ops.stop_gradient(x_adv)
    with _tape() as tape:
      if r.mode == "standard":
        logits = self.net(x, training=True)
        per_example = losses.cross_entropy(y, logits)
        adv_logits = None
      elif r.mode == "trades":
        # One forward on clean and adversarial halves together keeps BatchNorm statistics joint.
        both = self.net(ops.concatenate([x, x_adv], axis=0), training=True)
        logits, adv_logits = both[: ops.shape(x)[0]], both[ops.shape(x)[0]:]
        per_example = (losses.cross_entropy(y, logits)
                       + r.trades_beta * losses.kd_kl(logits, adv_logits, temperature=1.0))
      else:
        adv_logits = self.net(x_adv, training=True)
        logits = None
        per_example = losses.cross_entropy(y, adv_logits)
      loss = losses.replica_mean(per_example)
    variables = self.net.trainable_variables
    grads = tape.gradient(loss, variables)
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
