"""Tests of the bilevel search step: variable ownership, distribution equivalence, resource factor."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from rnascl_tf.errors import UserInputError
from rnascl_tf.nas.search_model import resource_factor
from rnascl_tf.configs import DistillConfig, SearchConfig
import helpers


def _snapshot(variables):
  return {v.path: np.array(v.numpy()) for v in variables}


def _changed(before, variables):
  return {v.path for v in variables if not np.array_equal(before[v.path], v.numpy())}


@pytest.mark.parametrize("frozen", ["arch", "weights"])
def test_each_optimizer_updates_only_its_variables(frozen):
  # Freezing one side by a zero learning rate shows which variables the other optimiser moves.
  model = helpers.tiny_search_model(arch_lr=0.0 if frozen == "arch" else 0.1,
                                    weight_lr=0.0 if frozen == "weights" else 0.05)
  # All the teacher's variables, BatchNorm moving statistics included: unchanged means it ran frozen
  # (no optimiser touched it) and in inference mode (its BN statistics did not move).
  teacher_vars = list(model.teacher.model.variables)
  n_trainable = len(model.teacher.model.trainable_variables)
  assert 0 < n_trainable < len(teacher_vars)
  arch, weights = model.arch_variables(), model.weight_variables()
  assert {v.path for v in arch}.isdisjoint({v.path for v in weights})
  assert {id(v) for v in teacher_vars}.isdisjoint({id(v) for v in model.trainable_variables})
  assert len(arch) + len(weights) == len(model.trainable_variables)
  before = _snapshot(arch + weights + teacher_vars)
  assert len(before) == len(arch) + len(weights) + len(teacher_vars)  # No two variables share a path.
  model.fit(helpers.as_dataset(helpers.random_search_batches(steps=2)), epochs=1, verbose=0)
  changed_arch, changed_weights = _changed(before, arch), _changed(before, weights)
  if frozen == "arch":
    assert not changed_arch and len(changed_weights) == len(weights)
  else:
    assert not changed_weights and changed_arch == {v.path for v in arch}
  assert not _changed(before, teacher_vars)
  assert int(model.optimizer.iterations) == 2 and int(model.arch_optimizer.iterations) == 2


def test_tutor_logits_get_gradient_in_the_step():
  model = helpers.tiny_search_model()
  before = model.tutor_logits.numpy().copy()
  model.fit(helpers.as_dataset(helpers.random_search_batches(steps=1)), epochs=1, verbose=0)
  assert np.abs(model.tutor_logits.numpy() - before).max() > 1e-4


def test_weight_only_warmup_leaves_arch_untouched():
  model = helpers.tiny_search_model(cfg=SearchConfig(resource="none", weight_only_epochs=1))
  assert model.update_arch is False
  before = _snapshot(model.arch_variables())
  model.fit(helpers.as_dataset(helpers.random_search_batches(steps=2)), epochs=1, verbose=0)
  assert not _changed(before, model.arch_variables())
  assert int(model.arch_optimizer.iterations) == 0


def _train(strategy, steps=3, xla=False):
  """Trains the tiny search model (xla: the step compiled by fit's jit_compile, as --jit_compile does)."""
  with strategy.scope():
    model = helpers.tiny_search_model(synchronized_bn=True)
    if xla:
      model.compile(optimizer=model.optimizer, jit_compile=True)
  ds = helpers.as_dataset(helpers.random_search_batches(batch=8, steps=steps))
  hist = model.fit(ds, epochs=1, verbose=0)
  x = helpers.random_search_batches(batch=4, steps=1, seed=5)[0][0][0]
  logits = model.supernet.forward(x, training=False, mode="softmax")["logits"]
  return hist.history, np.asarray(logits), model.tutor_logits.numpy(), [v.numpy() for v in model.arch_variables()]


def _assert_same_training(run1, run2):
  h1, logits1, tutor1, arch1 = run1
  h2, logits2, tutor2, arch2 = run2
  for key in ("loss", "ce", "kl", "cl", "arch_loss"):
    np.testing.assert_allclose(h1[key], h2[key], rtol=1e-4, atol=1e-5, err_msg=key)
  np.testing.assert_allclose(logits1, logits2, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tutor1, tutor2, atol=1e-5)
  for a, b in zip(arch1, arch2):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_mirrored_two_replicas_match_one_device():
  cpus = tf.config.list_logical_devices("CPU")
  assert len(cpus) >= 2, "conftest should split the CPU into two logical devices"
  _assert_same_training(_train(tf.distribute.get_strategy()),
                        _train(tf.distribute.MirroredStrategy([cpus[0].name, cpus[1].name])))


@pytest.mark.slow  # XLA compiles the whole bilevel step: ~30 s on 2 CPU cores.
def test_xla_compiled_step_trains_like_the_uncompiled_one():
  """--jit_compile: the whole bilevel step compiled by XLA. XLA draws other Gumbel noise from the same
  seeds, so the runs agree closely rather than exactly. (Under MirroredStrategy on two LOGICAL CPUs
  XLA cannot run the step at all: the second replica's variables live on another device, see
  BUILD.md; on real GPUs it is untested here.)"""
  h1, logits1, tutor1, _ = _train(tf.distribute.get_strategy())
  h2, logits2, tutor2, _ = _train(tf.distribute.get_strategy(), xla=True)
  for key in ("loss", "ce", "kl", "cl", "arch_loss"):
    assert np.isfinite(h2[key]).all(), key
    np.testing.assert_allclose(h1[key], h2[key], rtol=0.02, err_msg=key)
  assert np.abs(tutor2).max() > 1e-3  # The tutor logits (zeros at start) were trained.
  np.testing.assert_allclose(tutor1, tutor2, atol=0.5)
  np.testing.assert_allclose(logits1, logits2, rtol=0.05, atol=0.05)


def test_budget_resource_factor_pushes_widths_down():
  # No distillation, a tiny FLOP budget: the arch gradient is only the resource penalty's.
  cfg = SearchConfig(resource="budget", target_mflops=1e-4, mu=10.0,
                     distill=DistillConfig(lambda_kd=0.0, gamma_cl=0.0))
  model = helpers.tiny_search_model(cfg=cfg, arch_lr=0.2)
  start = float(model.supernet.expected_cost(*model.supernet.arch_weights("softmax"))["flops"])
  model.fit(helpers.as_dataset(helpers.random_search_batches(steps=15)), epochs=1, verbose=0)
  end = float(model.supernet.expected_cost(*model.supernet.arch_weights("softmax"))["flops"])
  assert end < 0.9 * start
  derived = model.supernet.derive()
  for spec in model.supernet.specs:
    assert derived["widths"][spec.name] == min(spec.width_options), spec.name


def test_resource_factor_forms():
  cost = {"flops": ops.convert_to_tensor(2e6), "params": ops.convert_to_tensor(5e4)}
  fb = float(resource_factor(cost, SearchConfig(resource="fbnet", alpha=0.2, beta=0.5)))
  assert fb == pytest.approx(0.2 * np.log(2e6) ** 0.5, rel=1e-5)
  under = float(resource_factor(cost, SearchConfig(resource="budget", target_mflops=4.0)))
  over = float(resource_factor(cost, SearchConfig(resource="budget", target_mflops=1.0, mu=0.5)))
  assert under == pytest.approx(1.0) and over == pytest.approx(1.5)
  params = float(resource_factor(cost, SearchConfig(resource="budget", target_mparams=0.025)))
  assert params == pytest.approx(2.0)
  assert float(resource_factor(cost, SearchConfig(resource="none"))) == 1.0


@pytest.mark.parametrize("kwargs, flag", [
    ({"resource": "budget"}, "--target_mflops"),
    ({"resource": "budget", "target_mflops": 1.0, "target_mparams": 1.0}, "--target_mflops"),
    ({"resource": "latency"}, "--resource"),
    ({"tau_min": 0.0}, "--tau_min"),
    ({"tau0": 0.05}, "--tau0"),
    ({"tau_decay": -1.0}, "--tau_decay"),
    ({"arch_split": "last"}, "--arch_split"),
])
def test_search_config_rejects_bad_values(kwargs, flag):
  with pytest.raises(UserInputError, match=flag):
    SearchConfig(**kwargs)


@pytest.mark.parametrize("requested, handed_to_keras", [(False, None), (True, True)])
def test_keras_train_function_gets_none_not_false_when_xla_is_off(requested, handed_to_keras):
  """Keras builds the train function with `tf.function(jit_compile=model.jit_compile)`; an explicit
  False there would also switch off the nested XLA kernels of losses.masked_tap (step_compile)."""
  model = helpers.tiny_search_model()
  model.compile(optimizer=model.optimizer, jit_compile=requested)
  assert model.jit_compile is handed_to_keras
