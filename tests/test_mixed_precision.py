"""--mixed_precision across the package: the flag, the driver's policy scope and loss scaling, float32 where
it must stay float32 (logits, losses, architecture parameters, attacks), fp16 resume, mixed-saved models.

Tolerances: on CPU a bf16 (fp16) run of 12 SGD steps on the toy below ends within 0.01 (0.015) of the
float32 loss (measured); the tests allow 0.05.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from keras import ops

import helpers
from rnascl_tf import cli, retrain, search, train_teacher
from rnascl_tf.configs import (DataConfig, EvalConfig, OptimConfig, RobustConfig, RunConfig, fingerprint,
                               fingerprint_differences)
from rnascl_tf.distill import losses
from rnascl_tf.errors import UserInputError
from rnascl_tf.evaluation import engine, loading
from rnascl_tf.models import child as child_lib
from rnascl_tf.nas import search_space as ss
from rnascl_tf.robust import attacks
from rnascl_tf.robust.attack_specs import parse_attack
from rnascl_tf.robust.trainer import RobustTrainer
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.runtime.checkpointing import Checkpointer, flat_variables
from rnascl_tf.stages import driver

TOLERANCE = 0.05


def _session(tmp_path, precision: str) -> driver.Session:
  return driver.Session(RunConfig(str(tmp_path / precision), mixed_precision=precision), batch_size=16)


def _toy_data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 1, (n,) + helpers.SHAPE).astype("float32"), (np.arange(n) % helpers.CLASSES).astype("int32")


@pytest.mark.parametrize("entry", [train_teacher, search, retrain])
def test_flag_reaches_the_run_config(entry):
  for args, expected in (([], "off"), (["--mixed_precision=bf16"], "bf16"), (["--mixed_precision=fp16"], "fp16")):
    fv = flags.FlagValues()
    entry.define_flags(fv)
    fv(["prog", "--model_dir=runs/a", *args])
    assert cli.run_config(fv).mixed_precision == expected


def test_bad_value_is_one_line_and_exit_2(tmp_path):
  with pytest.raises(UserInputError, match="--mixed_precision must be one of off, bf16, fp16"):
    RunConfig(model_dir="runs/a", mixed_precision="fp32")
  out = subprocess.run([sys.executable, "-m", "rnascl_tf.train_teacher", "--model_dir=m", "--mixed_precision=fp32"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": helpers.REPO})
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "--mixed_precision=fp32" in errors[0], out.stderr[-2000:]
  assert not any(tmp_path.iterdir())


def test_run_folders_from_before_the_flag_resume_as_float32_only():
  saved = fingerprint(run=RunConfig("runs/a"))
  del saved["run.mixed_precision"]  # What a run folder of the previous version recorded.
  assert fingerprint_differences(saved, fingerprint(run=RunConfig("runs/a"))) == []
  assert fingerprint_differences(saved, fingerprint(run=RunConfig("runs/a", mixed_precision="bf16"))) == [
      "run.mixed_precision: saved 'off', now 'bf16'"]


def test_scope_builds_in_the_run_policy_and_restores_the_global_one(tmp_path):
  session = _session(tmp_path, "bf16")
  with session.scope():
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    net = helpers.tiny_teacher()
  assert keras.config.dtype_policy().name == "float32"
  assert net.stem_conv.compute_dtype == "bfloat16" and {v.dtype for v in net.weights} == {"float32"}
  assert net(np.zeros((2,) + helpers.SHAPE, "float32")).dtype == "float32"  # float32 logits
  with pytest.raises(RuntimeError):
    with session.scope():
      raise RuntimeError("a stage failing while it builds")
  assert keras.config.dtype_policy().name == "float32"
  assert session.loss_scaled(keras.optimizers.SGD(0.1)).__class__ is keras.optimizers.SGD


def _train_toy(tmp_path, precision: str, init):
  """12 SGD steps of standard training on the toy, built in `precision`; returns (per-epoch losses, optimiser)."""
  session = _session(tmp_path, precision)
  with session.scope():
    net = helpers.tiny_teacher()
    net.set_weights(init)
    trainer = RobustTrainer(net, RobustConfig(mode="standard"))
    optimizer = session.loss_scaled(keras.optimizers.SGD(0.1, momentum=0.9))
    optimizer.build(net.trainable_variables)
    trainer.compile(optimizer=optimizer)
  x, y = _toy_data()
  history = trainer.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history
  return np.array(history["loss"]), optimizer


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
  init = helpers.tiny_teacher().get_weights()
  losses_f32, _ = _train_toy(tmp_path_factory.mktemp("f32"), "off", init)
  return init, losses_f32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_step_trains_like_float32(float32_run, precision, tmp_path):
  init, losses_f32 = float32_run
  losses_mixed, optimizer = _train_toy(tmp_path, precision, init)
  assert losses_f32[-1] < losses_f32[0] - 0.5  # The toy does train.
  np.testing.assert_allclose(losses_mixed, losses_f32, atol=TOLERANCE)
  if precision == "fp16":
    # The step scaled the loss and `apply` unscaled the gradients: every step finite and applied.
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(optimizer.inner_optimizer.iterations) == 12 and float(optimizer.dynamic_scale) == 2.0 ** 15


def test_fp16_checkpoint_restores_the_loss_scale(tmp_path):
  session = _session(tmp_path, "fp16")
  with session.scope():
    net = helpers.tiny_teacher()
    optimizer = session.optimizer(OptimConfig(), steps_per_epoch=4)
    optimizer.build(net.trainable_variables)
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  names = [v.name for v in flat_variables({"optimizer": optimizer}).values()]
  assert any("dynamic_scale" in n for n in names) and any("step_counter" in n for n in names)
  run_dir = str(tmp_path / "run")
  os.makedirs(run_dir)

  def checkpointer():
    return Checkpointer(run_dir, "train", {"run.mixed_precision": "fp16"}, {"net": net, "optimizer": optimizer})

  assert checkpointer().restore() == 0
  optimizer.dynamic_scale.assign(512.0)
  optimizer.step_counter.assign(7)
  checkpointer().save(1)
  optimizer.dynamic_scale.assign(2.0)
  optimizer.step_counter.assign(0)
  assert checkpointer().restore() == 1
  assert float(optimizer.dynamic_scale) == 512.0 and int(optimizer.step_counter) == 7


class _ReadInsideAutocast(keras.layers.Layer):
  """Reads architecture parameters inside a bf16 layer's call, where Keras autocasts variables that allow it."""

  def __init__(self, model):
    super().__init__(dtype="mixed_bfloat16")
    self.model = model

  def call(self, x):
    widths, _ = self.model.supernet.arch_weights("softmax")
    return widths[0], ops.convert_to_tensor(self.model.tutor_logits), ops.convert_to_tensor(
        self.model.supernet.temperature)


def test_architecture_parameters_stay_float32_in_a_bf16_search(tmp_path):
  with _session(tmp_path, "bf16").scope():
    model = helpers.tiny_search_model()
  arch = model.arch_variables()
  before = [v.numpy().copy() for v in arch]
  model.fit(helpers.as_dataset(helpers.random_search_batches(steps=1)), epochs=1, verbose=0)
  assert model.supernet.stem.compute_dtype == "bfloat16"
  assert all(v.dtype == "float32" for v in arch) and model.supernet.temperature.dtype == "float32"
  assert all(not np.allclose(b, v.numpy()) for b, v in zip(before, arch))  # Both kinds were trained.
  assert all(t.dtype == "float32" for t in _ReadInsideAutocast(model)(np.zeros((1, 1), "float32")))
  out = model.supernet.forward(np.zeros((2,) + helpers.SHAPE, "float32"), training=True, tap_energies="unmasked")
  assert out["logits"].dtype == "float32" and out["width_weights"][0].dtype == "float32"
  assert {t.dtype for t in out["taps"]} == {tf.float32}  # Energy maps, normalised in float32.


def test_masked_tap_sums_the_mask_gradient_in_float32():
  rng = np.random.default_rng(0)
  value32 = tf.constant(rng.uniform(-1, 1, (4, 6, 6, 8)).astype("float32"))
  mask = tf.Variable(rng.uniform(0, 1, (8,)).astype("float32"))
  grads = {}
  for dtype in ("float32", "bfloat16"):
    for keep in ("masked", "unmasked"):
      with tf.GradientTape() as tape:
        out, energy = losses.masked_tap(tf.cast(value32, dtype), mask, keep=keep)
        loss = tf.reduce_sum(energy) + tf.reduce_sum(tf.cast(out, "float32"))
      assert out.dtype == dtype and energy.dtype == tf.float32
      grads[dtype, keep] = tape.gradient(loss, mask)
      assert grads[dtype, keep].dtype == tf.float32
  for keep in ("masked", "unmasked"):
    reference = grads["float32", keep].numpy()
    np.testing.assert_allclose(grads["bfloat16", keep], reference, atol=0.02 * np.abs(reference).max())


@pytest.mark.parametrize("spec", ["fgsm", "pgd5", "mifgsm5", "cw5"])
def test_attacks_on_a_bf16_model_stay_within_eps_and_pixels(tmp_path, spec):
  with _session(tmp_path, "bf16").scope():
    net = helpers.tiny_teacher()
  x, y = _toy_data(16, seed=1)
  x[0], x[1] = 0.0, 1.0  # Pixels on both edges of the box.
  eps = 8 / 255
  model_fn = lambda images: net(images, training=False)  # noqa: E731
  x_adv = attacks.generate(model_fn, x, y, parse_attack(spec, eps, 2 / 255))
  assert x_adv.dtype == tf.float32
  delta = np.abs(x_adv.numpy() - x)
  assert delta.max() <= eps + 1e-7 and x_adv.numpy().min() >= 0.0 and x_adv.numpy().max() <= 1.0
  assert (delta > eps / 2).mean() > 0.3  # The bf16 model's input gradient drove most pixels.
  xt = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    loss = tf.reduce_sum(attacks.margin_loss(y, model_fn(xt)))
  grad = tape.gradient(loss, xt)
  assert grad.dtype == tf.float32 and float(tf.reduce_max(tf.abs(grad))) > 0


def _tiny_child():
  return child_lib.ChildNet(ss.get_space("tiny"), [4, 12, 8], [3, 3, 3], helpers.SHAPE, helpers.CLASSES, [0.5],
                            [0.25], name="student")


def _saved_mixed_and_twin(tmp_path, build):
  """`build()` in bf16 and its float32 twin with the same (float32) weights, saved; returns their paths."""
  with _session(tmp_path, "bf16").scope():
    mixed = build()
  twin = build()
  twin.set_weights(mixed.get_weights())
  paths = {name: str(tmp_path / f"{name}.keras") for name in ("mixed", "twin")}
  io_utils.atomic_save_keras(mixed, paths["mixed"])
  io_utils.atomic_save_keras(twin, paths["twin"])
  return mixed, twin, paths


@pytest.mark.parametrize("kind", ["teacher", "child"])
def test_a_model_saved_under_bf16_loads_as_its_float32_twin(tmp_path, kind):
  mixed, twin, paths = _saved_mixed_and_twin(tmp_path, helpers.tiny_teacher if kind == "teacher" else _tiny_child)
  loaded = loading.load_model(paths["mixed"]).model_fn.model
  stem = loaded.stem_conv if kind == "teacher" else loaded.stem
  assert stem.compute_dtype == loaded.stem_bn.compute_dtype == loaded.classifier.compute_dtype == "float32"
  x, _ = _toy_data(8, seed=2)
  np.testing.assert_allclose(loaded(x), twin(x), atol=1e-5)
  np.testing.assert_allclose(loaded(x), mixed(x), atol=0.05 * float(np.abs(twin(x)).max()))


def test_evaluate_reads_a_bf16_saved_student_like_its_float32_twin(tmp_path):
  _, _, paths = _saved_mixed_and_twin(tmp_path, _tiny_child)
  data_cfg = DataConfig(dataset="digits", image_size=8, batch_size=16)
  config = EvalConfig(attacks=("fgsm",), eps_sweep=(), blackbox_queries=0, num_examples=16)
  out = {name: engine.evaluate_path(path, data_cfg, config, output_dir=str(tmp_path / f"{name}_eval"),
                                    fail_on_sanity=False) for name, path in paths.items()}
  accuracies = {name: [r["clean"]["accuracy"]] + [a["accuracy"] for a in r["attacks"]] for name, r in out.items()}
  assert accuracies["mixed"] == accuracies["twin"] and len(accuracies["twin"]) == 2
