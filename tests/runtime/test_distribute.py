"""tf.distribute: strategies, one device vs two mirrored replicas for every stage, the custom loop.

Two replicas are the two logical CPUs of tests/conftest.py. Every equivalence test uses
synchronized BatchNorm (otherwise each replica normalises with its own half-batch statistics and
the runs legitimately differ). Tolerances: float32 sums over one batch vs two half batches differ
in the last bits; after 3 SGD steps weights agreed to ~4e-7 in our runs, logged losses to ~1e-7;
we assert 1e-5 (weights) and rtol 1e-5 (losses).
"""

import json
import os

import keras
import numpy as np
import pytest
from absl import flags
import tensorflow as tf
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

import helpers
from rnascl_tf.robust import attacks
from rnascl_tf.models import child as child_lib
from rnascl_tf import cli
from rnascl_tf.runtime import distribute
from rnascl_tf.runtime import custom_loop as distributed_loop
from rnascl_tf.nas import search_space as ss
from rnascl_tf.stages import search as searching
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.distill.keras_graph import all_sublayers
from rnascl_tf.models import teachers
from rnascl_tf.stages import driver as training
from rnascl_tf.runtime.checkpointing import Checkpointer
from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig
from rnascl_tf.data import load_splits
from rnascl_tf.configs import DataConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.trainer import RobustTrainer
from rnascl_tf.configs import DistillConfig
from rnascl_tf.configs import SearchConfig, TeacherConfig

BATCH, STEPS = 8, 3


def _fresh_collective_keys():
  # Several strategies over the same devices in ONE process reuse collective group/instance keys,
  # and the runtime's cached parameters of an earlier strategy's all-reduce then clash ("Shape
  # mismatch in the collective instance ..."). TF's own tests move the key base for every
  # strategy ("only set this in tests"); a real run has one strategy per process.
  for cls in (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy):
    cls._collective_key_base += 100_000


@pytest.fixture(autouse=True)
def _own_collective_keys():
  _fresh_collective_keys()
  yield
  _fresh_collective_keys()  # Strategies created later (other modules) do not reuse ours.


def _mirrored():
  cpus = tf.config.list_logical_devices("CPU")
  assert len(cpus) >= 2, "conftest should split the CPU into two logical devices"
  _fresh_collective_keys()
  return tf.distribute.MirroredStrategy([cpus[0].name, cpus[1].name])


def _batches(steps=STEPS, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (BATCH * steps,) + helpers.SHAPE).astype("float32")
  y = rng.integers(0, helpers.CLASSES, BATCH * steps).astype("int32")
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


# --- strategies and helpers -------------------------------------------------------------------

def test_tpu_strategy_fails_clearly_without_tpu(monkeypatch):
  monkeypatch.delenv("TPU_NAME", raising=False)
  with pytest.raises(UserInputError, match="--strategy=tpu but no TPU could be reached"):
    distribute.make_strategy("tpu")


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG needs 'cluster' and 'task'"),
])
def test_multi_worker_rejects_a_bad_tf_config(monkeypatch, tf_config, message):
  monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(UserInputError, match=message):
    distribute.make_strategy("multi_worker")


def test_unknown_strategy_and_uneven_global_batch():
  with pytest.raises(UserInputError, match="--strategy"):
    distribute.make_strategy("horovod")
  with pytest.raises(UserInputError, match="--batch_size=15 is the GLOBAL batch"):
    distribute.check_global_batch(15, _mirrored())
  distribute.check_global_batch(16, _mirrored())


def test_chief_and_learning_rate_scaling_outside_a_cluster():
  default = distribute.make_strategy("default")
  assert distribute.is_chief(default) and distribute.task_info(default) == (None, 0)
  assert not distribute.is_multi_worker(default)
  mirrored = _mirrored()
  assert distribute.is_chief(mirrored) and not distribute.is_multi_worker(mirrored)
  assert distribute.scaled_learning_rate(0.1, mirrored, scale=False) == 0.1
  assert distribute.scaled_learning_rate(0.1, mirrored, scale=True) == pytest.approx(0.2)


def test_run_flags_reach_the_run_config():
  fv = flags.FlagValues()
  cli.define_run_flags(fv, default_epochs=1)
  assert {"strategy", "num_gpus", "sync_bn", "scale_lr_with_replicas"} <= set(fv)
  fv(["prog", "--model_dir=/tmp/x", "--epochs=2", "--seed=1", "--strategy=multi_worker", "--sync_bn",
      "--scale_lr_with_replicas", "--verbose=0"])
  run = cli.run_config(fv)
  assert run.strategy == "multi_worker" and run.sync_bn and run.scale_lr_with_replicas
  assert RunConfig(model_dir="/tmp/x").sync_bn is False
  with pytest.raises(UserInputError, match="--strategy"):
    RunConfig(model_dir="/tmp/x", strategy="gpus")


def test_teacher_sync_bn_option():
  plain = helpers.tiny_teacher()
  synced = teachers.build_teacher("small_cnn", helpers.SHAPE, 10, [0.5], [0.25], width_multiplier=0.25,
                                  synchronized_bn=True)
  bns = [l for l in all_sublayers(synced) if isinstance(l, keras.layers.BatchNormalization)]
  assert bns and all(l.synchronized for l in bns)
  assert not any(l.synchronized for l in all_sublayers(plain) if isinstance(l, keras.layers.BatchNormalization))
  config = synced.get_config()
  assert config["synchronized_bn"] is True and plain.get_config()["synchronized_bn"] is False
  assert teachers.SmallCNN.from_config(config).get_config() == config


# --- seeded PGD random start ------------------------------------------------------------------

def test_pgd_from_a_start_is_cleverhans_pgd():
  net = helpers.tiny_teacher()
  model_fn = lambda z: net(z, training=False)  # noqa: E731
  x, y = next(iter(_batches(1)))
  cfg = attacks.AttackConfig(name="pgd", eps=0.1, step_size=0.03, steps=3, rand_init=False)
  ours = attacks.generate(model_fn, x, y, cfg, x_start=x)
  theirs = projected_gradient_descent(model_fn, x, 0.1, 0.03, 3, np.inf, clip_min=0.0, clip_max=1.0, y=y,
                                      rand_init=False, sanity_checks=False)
  np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
  far = attacks.generate(model_fn, x, y, cfg, x_start=x + 0.5)  # projected back into the ball
  assert float(tf.reduce_max(tf.abs(far - x))) <= 0.1 + 1e-6
  with pytest.raises(ValueError, match="x_start"):
    attacks.generate(model_fn, x, y, attacks.AttackConfig(name="fgsm", eps=0.1), x_start=x)


def test_training_attack_start_is_seeded():
  x, y = next(iter(_batches(1)))
  net = helpers.tiny_teacher()

  def adversarial(seed):
    trainer = RobustTrainer(net, RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=1), seed=seed)
    return trainer.adversarial_examples(x, y).numpy()

  np.testing.assert_array_equal(adversarial(4), adversarial(4))
  assert not np.array_equal(adversarial(4), adversarial(5))


# --- one device vs two mirrored replicas ------------------------------------------------------

def _fit_trainer(strategy, mode, distill=False, loop=False):
  """A few SGD steps of a sync-BN network under `strategy` (fit, or the custom loop)."""
  with strategy.scope():
    keras.utils.set_random_seed(0)
    if distill:
      space = ss.get_space("tiny")
      widths = {s.name: s.width_options[-1] for s in ss.block_specs(space)}
      net = child_lib.build_child_from_choices(space, {"widths": widths}, helpers.SHAPE, 10, [0.5], [0.25],
                                               synchronized_bn=True)
      teacher = helpers.tiny_teacher()
      taps = teacher_io.TeacherTaps(teacher, teacher.tap_names("conv"))
      n_s, n_t = len(net.student_layer_names), len(taps.layer_names)
      cfg = DistillConfig(lambda_kd=1.0, kd_temperature=2.0, gamma_cl=1.0, cl_grid=4,
                          tutor_map=[i * (n_t - 1) // (n_s - 1) for i in range(n_s)])
    else:
      net = teachers.build_teacher("small_cnn", helpers.SHAPE, 10, [0.5], [0.25], width_multiplier=0.25,
                                   synchronized_bn=True)
      taps, cfg = None, None
    net(np.zeros((1,) + helpers.SHAPE, "float32"))
    trainer = RobustTrainer(net, RobustConfig(mode=mode, eps=0.1, step_size=0.05, steps=2), seed=0,
                            teacher=taps, distill=cfg)
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
    opt.build(net.trainable_variables)
    trainer.compile(optimizer=opt)
  if loop:
    history = distributed_loop.run_epochs(strategy, trainer, _batches(), STEPS, 0, 1,
                                          step=lambda batch: trainer.step(*batch))
  else:
    hist = trainer.fit(_batches(), epochs=1, verbose=0).history
    history = [{k: v[0] for k, v in hist.items()}]
  return history[-1], [v.numpy() for v in net.variables]


def _assert_same(run1, run2):
  (logs1, w1), (logs2, w2) = run1, run2
  assert set(logs1) == set(logs2)
  for key in logs1:
    np.testing.assert_allclose(logs1[key], logs2[key], rtol=1e-5, atol=1e-6, err_msg=key)
  assert len(w1) == len(w2)
  for a, b in zip(w1, w2):  # BatchNorm moving statistics included.
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("mode", ["standard", "pgd"])
def test_teacher_training_mirrored_matches_one_device(mode):
  # PGD's random start is drawn for the global batch from the trainer's seed and sliced per
  # replica, so both runs attack from the same points.
  _assert_same(_fit_trainer(tf.distribute.get_strategy(), mode), _fit_trainer(_mirrored(), mode))


def test_retraining_ce_kd_mirrored_matches_one_device():
  one = _fit_trainer(tf.distribute.get_strategy(), "standard", distill=True)
  assert {"kl", "cl"} <= set(one[0])
  _assert_same(one, _fit_trainer(_mirrored(), "standard", distill=True))


def test_custom_loop_on_two_replicas_matches_fit_on_one_device():
  _assert_same(_fit_trainer(tf.distribute.get_strategy(), "standard"),
               _fit_trainer(_mirrored(), "standard", loop=True))


# --- the custom loop: callbacks, re-tracing, drivers ------------------------------------------

class _Recorder(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.events, self.epoch_logs = [], []

  def on_train_begin(self, logs=None):
    self.events.append("train_begin")

  def on_epoch_begin(self, epoch, logs=None):
    self.events.append(f"epoch_begin {epoch}")

  def on_train_batch_end(self, batch, logs=None):
    self.events.append(f"batch_end {batch}")

  def on_epoch_end(self, epoch, logs=None):
    self.events.append(f"epoch_end {epoch}")
    self.epoch_logs.append({k: float(v) for k, v in logs.items()})

  def on_train_end(self, logs=None):
    self.events.append("train_end")


def _standard_run(loop: bool):
  """2 epochs x 2 steps of standard training on one device, by fit or by the custom loop."""
  keras.utils.set_random_seed(0)
  net = helpers.tiny_teacher()
  trainer = RobustTrainer(net, RobustConfig(mode="standard"), seed=0)
  opt = keras.optimizers.SGD(0.05, momentum=0.9)
  opt.build(net.trainable_variables)
  trainer.compile(optimizer=opt)
  data = _batches(steps=4)
  recorder = _Recorder()
  if loop:
    distributed_loop.run_epochs(tf.distribute.get_strategy(), trainer, data, 2, 0, 2, [recorder],
                                step=lambda batch: trainer.step(*batch))
  else:
    trainer.fit(data, epochs=2, steps_per_epoch=2, callbacks=[recorder], verbose=0)
  return recorder, [v.numpy() for v in net.variables]


def test_custom_loop_calls_callbacks_like_fit():
  fit_rec, fit_w = _standard_run(loop=False)
  loop_rec, loop_w = _standard_run(loop=True)
  assert loop_rec.events == fit_rec.events
  assert loop_rec.events[:4] == ["train_begin", "epoch_begin 0", "batch_end 0", "batch_end 1"]
  assert loop_rec.events[-2:] == ["epoch_end 1", "train_end"]
  for a, b in zip(fit_rec.epoch_logs, loop_rec.epoch_logs):  # Metrics are reset every epoch, as in fit.
    assert set(a) == set(b) == {"loss", "acc"}
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
  for a, b in zip(fit_w, loop_w):
    np.testing.assert_allclose(a, b, atol=1e-6)


class _FlagModel(keras.Model):
  """A toy model whose step bakes a Python flag into the trace (like SearchModel.update_arch)."""

  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(1)
    self.flag = False
    self.tracker = keras.metrics.Mean(name="flag")

  @property
  def metrics(self):
    return [self.tracker]

  def step(self, batch):
    self.tracker.update_state(1.0 if self.flag else 0.0)


class _FlipFlag(keras.callbacks.Callback):

  def __init__(self, force: bool):
    super().__init__()
    self.force = force

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == 1:
      self.model.flag = True
      if self.force:
        self.model.make_train_function(force=True)


@pytest.mark.parametrize("force", [True, False])
def test_custom_loop_retraces_when_a_callback_forces_it(force):
  model = _FlagModel()
  model.compile(optimizer="sgd")
  data = tf.data.Dataset.from_tensors(tf.zeros([2, 1])).repeat()
  history = distributed_loop.run_epochs(tf.distribute.get_strategy(), model, data, 2, 0, 2, [_FlipFlag(force)])
  assert [h["flag"] for h in history] == [0.0, 1.0 if force else 0.0]


def test_worker_checkpointer_restores_the_chiefs_checkpoint_and_keeps_nothing(tmp_path):
  v = tf.Variable([1.0, 2.0])
  chief = Checkpointer(str(tmp_path), "search", {"seed": 0}, {"v": v})
  chief.save(1, {"history": [{"epoch": 1}]})
  v.assign([5.0, 6.0])
  chief.save(2, {"history": [{"epoch": 1}, {"epoch": 2}]})
  w = tf.Variable([0.0, 0.0])
  worker = distributed_loop.WorkerCheckpointer(str(tmp_path), "search", {"seed": 0}, {"v": w}, task="worker_1")
  assert worker.restore() == 2
  np.testing.assert_array_equal(w.numpy(), [5.0, 6.0])
  state_before = (tmp_path / "run_state.json").read_text()
  files_before = sorted(os.listdir(tmp_path / "ckpt"))
  worker.save(3, {"history": []})
  assert (tmp_path / "run_state.json").read_text() == state_before
  assert sorted(os.listdir(tmp_path / "ckpt")) == files_before
  assert not os.path.exists(worker.temp_dir) and worker.state["epochs_completed"] == 3


DATA = DataConfig(dataset="digits", image_size=8, batch_size=16, max_train_examples=200, max_test_examples=32)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
  return helpers.save_tiny_teacher(str(tmp_path_factory.mktemp("teacher") / "teacher.keras"))


def _search(model_dir, teacher, strategy):
  return searching.run_search(
      run=RunConfig(model_dir=str(model_dir), epochs=2, steps_per_epoch=2, strategy=strategy, verbose=0, seed=1),
      data_cfg=DATA, optim_cfg=OptimConfig(optimizer="adam", learning_rate=0.004),
      cfg=SearchConfig(weight_only_epochs=1, arch_weight_decay=0.0, tau_decay=0.5),
      teacher=TeacherConfig(path=teacher))


@pytest.mark.slow
def test_search_driver_multi_worker_branch_on_one_local_worker(teacher_file, tmp_path, monkeypatch):
  # Without TF_CONFIG, MultiWorkerMirroredStrategy is one local worker (the chief): the driver takes
  # the custom-loop branch and must give fit's result on the same device. Epoch 1 is weight-only,
  # so the loop must also re-trace when WeightOnlyWarmup turns the architecture update on.
  monkeypatch.delenv("TF_CONFIG", raising=False)
  ref = _search(tmp_path / "fit", teacher_file, "default")
  out = _search(tmp_path / "loop", teacher_file, "multi_worker")
  assert out["is_chief"] and (tmp_path / "loop" / "genotype.json").exists()
  assert os.path.isdir(tmp_path / "loop" / "tb")
  g1, g2 = ref["genotype"], out["genotype"]
  assert [b["width"] for b in g1["blocks"]] == [b["width"] for b in g2["blocks"]]
  np.testing.assert_allclose([s["tutor_probs"] for s in g1["student_layers"]],
                             [s["tutor_probs"] for s in g2["student_layers"]], atol=1e-6)
  assert "arch_loss" not in out["history"][0] and "arch_loss" in out["history"][1]
  for h1, h2 in zip(ref["history"], out["history"]):
    assert set(h1) - {"seconds"} == set(h2) - {"seconds"}
    for key in ("loss", "kl", "cl", "temperature", "exp_mflops"):
      assert h2[key] == pytest.approx(h1[key], rel=1e-5), key
  assert out["history"][1]["arch_loss"] == pytest.approx(ref["history"][1]["arch_loss"], rel=1e-5)
  state = json.loads((tmp_path / "loop" / "run_state.json").read_text())
  assert state["epochs_completed"] == 2


@pytest.mark.slow
def test_robust_driver_multi_worker_branch_on_one_local_worker(tmp_path, monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  splits = load_splits(DATA)

  def build():
    info = splits.info
    return teachers.build_teacher("small_cnn", info.input_shape, info.num_classes, info.mean, info.std,
                                  width_multiplier=0.25), None

  robust = RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=1, val_attack_steps=1, val_examples=16,
                        test_attack_steps=1)
  outs = {}
  for strategy in ("default", "multi_worker"):
    run = RunConfig(model_dir=str(tmp_path / strategy), epochs=1, steps_per_epoch=2, strategy=strategy, verbose=0)
    outs[strategy] = training.fit_robust(run, splits, robust, OptimConfig(learning_rate=0.05), build, "train_teacher",
                                         str(tmp_path / strategy / "teacher.keras"), {"seed": 0})
  ref, out = outs["default"], outs["multi_worker"]
  assert out["is_chief"] and (tmp_path / "multi_worker" / "teacher.keras").exists()
  assert out["history"][0]["loss"] == pytest.approx(ref["history"][0]["loss"], rel=1e-5)
  assert set(out["history"][0]) >= {"loss", "adv_acc", "val_clean_acc", "val_pgd_acc"}
  for a, b in zip(ref["net"].variables, out["net"].variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
