"""The bilevel RNAS-CL search step: weights on one split, widths + tutors on the other.

`SearchModel.train_step` (used by `model.fit`) runs the per-replica step `SearchModel.step`, which a
custom `strategy.run` loop can call as is (multi-worker).
"""


import keras
import tensorflow as tf
from keras import ops

from rnascl_tf.distill import losses
from rnascl_tf.configs import SearchConfig
from rnascl_tf.runtime.xla import NestedXlaJit



def resource_factor(cost: dict, cfg: SearchConfig):
  """The multiplicative resource factor of the architecture loss, differentiable in the widths.

  Args:
    cost: {"flops": E[FLOPs] (multiply-accumulates), "params": E[params]} scalar tensors.
    cfg: the search config.

  Returns:
    A scalar tensor (1.0 for resource="none").
  """
  if cfg.resource == "fbnet":
    return cfg.alpha * ops.power(ops.log(ops.maximum(cost["flops"], 2.0)), cfg.beta)
  if cfg.resource == "budget":
    if cfg.target_mflops > 0:
      ratio = cost["flops"] / (cfg.target_mflops * 1e6)
    else:
      ratio = cost["params"] / (cfg.target_mparams * 1e6)
    return 1.0 + cfg.mu * ops.relu(ratio - 1.0)
  return ops.convert_to_tensor(1.0)


class SearchModel(NestedXlaJit, keras.Model):
  """Supernet + frozen teacher taps + tutor logits, trained by a bilevel custom `train_step`.

  Data: `((x_weight, y_weight), (x_arch, y_arch))` per step. The weight optimiser is `optimizer`
  (passed to `compile`); the architecture optimiser (width logits + tutor logits) is `arch_optimizer`.
  Both must be built on their own variables inside the strategy scope before `fit`.

  Args:
    supernet: a `supernet.Supernet`.
    teacher: a `teacher_io.TeacherTaps` (frozen; run in inference mode outside the tapes).
    cfg: the search objective.
    arch_optimizer: optimiser of the architecture and tutor logits.
    seed: seed of the tutor Gumbel noise.
  """

  def __init__(self, supernet, teacher, cfg: SearchConfig, arch_optimizer, seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.supernet = supernet
    self._teacher = teacher  # Plain object: its variables are not ours to train or checkpoint.
    self.cfg = cfg
    self.arch_optimizer = arch_optimizer
    self.num_student_layers = len(supernet.student_layer_names)
    self.num_teacher_layers = len(teacher.layer_names)
    # autocast=False: architecture parameters stay float32 under a mixed policy (BUILD.md, mixed precision).
    self.tutor_logits = self.add_weight(shape=(self.num_student_layers, self.num_teacher_layers),
                                        initializer="zeros", name="tutor_logits", trainable=True, autocast=False)
    self.tutor_seed = keras.random.SeedGenerator(seed + 7919)
    # Python flag, not a tensor: flipping it re-traces the step once (see WeightOnlyWarmup).
    self.update_arch = cfg.weight_only_epochs == 0
    names = ["loss", "ce", "kl", "cl", "arch_loss", "resource_factor", "exp_mflops", "exp_mparams",
             "temperature", "width_entropy", "tutor_entropy", "acc"]
    self._trackers = {n: keras.metrics.Mean(name=n) for n in names if n != "acc"}
    self._trackers["acc"] = keras.metrics.SparseCategoricalAccuracy(name="acc")
    # Every variable exists now (the supernet builds itself). Marking the model built stops `fit`
    # from "building" it on the first zipped batch, which fails under MirroredStrategy.
    self.built = True

  @property
  def metrics(self):
    return list(self._trackers.values())

  @property
  def teacher(self):
    """The frozen `TeacherTaps` the step distils from (held untracked: never trained or checkpointed here)."""
    return self._teacher

  def arch_variables(self):
    """Width (and expansion) logits of the supernet plus the tutor logits."""
    return list(self.supernet.arch_variables()) + [self.tutor_logits]

  def weight_variables(self):
    return list(self.supernet.weight_variables())

  def call(self, x, training=False):
    return self.supernet(x, training=training)

  def tutor_probabilities(self):
    return ops.softmax(self.tutor_logits, axis=-1)

  def _objective(self, x, y, teacher_logits, teacher_energies, training_mode: str, keep: str):
    """Per-example loss terms of the supernet on (x, y) against the teacher's logits and tap energies;
    `keep` is `losses.masked_tap`'s ("unmasked" for the architecture update, "masked" for the weights)."""
    out = self.supernet.forward(x, training=True, mode=training_mode, tap_energies=keep)
    logits = out["logits"]
    g = losses.tutor_weights(self.tutor_logits, self.supernet.temperature, self.tutor_seed, mode="gumbel")
    ce = losses.cross_entropy(y, logits)
    kl = losses.kd_kl(teacher_logits, logits, temperature=self.cfg.distill.kd_temperature)
    dist = losses.layer_distances_from_energies(out["taps"], teacher_energies, self.cfg.distill.cl_grid)
    cl = losses.cross_layer_loss(dist, g)
    per_example = ce + self.cfg.distill.lambda_kd * kl + self.cfg.distill.gamma_cl * cl
    return per_example, {"ce": ce, "kl": kl, "cl": cl, "logits": logits, "width_weights": out["width_weights"],
                         "expansion_weights": out["expansion_weights"]}

  def _expected_cost(self, parts):
    cost = self.supernet.expected_cost(parts["width_weights"], parts["expansion_weights"])
    return {k: ops.cast(v, "float32") for k, v in cost.items()}

  def _teacher_outputs(self, x):
    """(logits, tap energy maps) of the frozen teacher, gradient-free."""
    logits, acts = self._teacher(x)
    return ops.stop_gradient(logits), [losses.channel_energy(ops.stop_gradient(a)) for a in acts]

  def step(self, data):
    """One per-replica bilevel step; returns the per-replica scaled weight loss."""
    (x_w, y_w), (x_a, y_a) = data
    # The teacher runs once per batch, frozen, outside both tapes (docs/keras_notes.md note 8); only its
    # logits and tap energy maps are kept, not its activations (memory: BUILD.md benchmarks).
    t_logits_w, t_energy_w = self._teacher_outputs(x_w)
    cost = None
    if self.update_arch:
      t_logits_a, t_energy_a = self._teacher_outputs(x_a)
      arch_vars = self.arch_variables()
      with tf.GradientTape() as tape:
        per_example, parts = self._objective(x_a, y_a, t_logits_a, t_energy_a, "gumbel", "unmasked")
        cost = self._expected_cost(parts)
        factor = resource_factor(cost, self.cfg)
        arch_loss = losses.replica_mean(per_example) * factor
        # Both optimisers are LossScaleOptimizers under fp16 (scale here, unscale in `apply`); else no-ops.
        scaled_arch_loss = self.arch_optimizer.scale_loss(arch_loss)
      self.arch_optimizer.apply(tape.gradient(scaled_arch_loss, arch_vars), arch_vars)
      self._trackers["arch_loss"].update_state(ops.mean(per_example) * factor)
      self._trackers["resource_factor"].update_state(factor)
    weight_vars = self.weight_variables()
    with tf.GradientTape() as tape:
      per_example, parts = self._objective(x_w, y_w, t_logits_w, t_energy_w, "gumbel", "masked")
      loss = losses.replica_mean(per_example)
      scaled_loss = self.optimizer.scale_loss(loss)
    self.optimizer.apply(tape.gradient(scaled_loss, weight_vars), weight_vars)
    if cost is None:
      cost = self._expected_cost(parts)
    self._log(per_example, parts, y_w, cost)
    return loss

  def _log(self, per_example, parts, labels, cost):
    t = self._trackers
    t["loss"].update_state(ops.mean(per_example))
    for k in ("ce", "kl", "cl"):
      t[k].update_state(ops.mean(parts[k]))
    t["acc"].update_state(labels, parts["logits"])
    t["exp_mflops"].update_state(cost["flops"] / 1e6)
    t["exp_mparams"].update_state(cost["params"] / 1e6)
    t["temperature"].update_state(self.supernet.temperature)
    widths = [ops.mean(losses.entropy(ops.softmax(v))) for v in self.supernet.arch_variables()]
    t["width_entropy"].update_state(ops.mean(ops.stack(widths)))
    t["tutor_entropy"].update_state(ops.mean(losses.entropy(self.tutor_probabilities())))

  def train_step(self, data):
    self.step(data)
    # During weight-only warm-up the architecture terms are not computed: do not log zeros.
    skip = () if self.update_arch else ("arch_loss", "resource_factor")
    return {m.name: m.result() for m in self.metrics if m.name not in skip}


class TemperatureSchedule(keras.callbacks.Callback):
  """Sets the supernet's Gumbel temperature at the start of each epoch (`SearchConfig.temperature`).

  Args:
    temperature_variable: the supernet's `temperature` weight.
    cfg: the search config (tau0, tau_decay, tau_min).
    epochs: the search's number of epochs ("auto" decay reaches tau_min at the last one).
  """

  def __init__(self, temperature_variable, cfg: SearchConfig, epochs: int):
    super().__init__()
    self.variable, self.cfg, self.epochs = temperature_variable, cfg, epochs

  def value(self, epoch: int) -> float:
    return self.cfg.temperature(epoch, self.epochs)

  def on_epoch_begin(self, epoch, logs=None):
    self.variable.assign(self.value(epoch))


class WeightOnlyWarmup(keras.callbacks.Callback):
  """Turns the architecture update on after `epochs` weight-only epochs (re-traces the step once)."""

  def __init__(self, epochs: int):
    super().__init__()
    self.epochs = epochs

  def on_epoch_begin(self, epoch, logs=None):
    want = epoch >= self.epochs
    if want != self.model.update_arch:
      self.model.update_arch = want
      self.model.make_train_function(force=True)
