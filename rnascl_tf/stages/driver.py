"""The one resumable training driver of every stage (teacher training, search, retraining).

Model Garden's split: an entry point parses flags into configs; a stage builds its model inside the
strategy scope this driver opens (`Session`), and `Session.fit` runs it with epoch checkpoints,
NaN guard and TensorBoard, resuming after the last completed epoch: Keras `fit`, or the custom loop
where `fit` cannot run (multi-worker). `fit_robust` is the robust-training stage both the teacher
and the retraining run: it keeps the best checkpoint by validation PGD accuracy (never the test
split) and the last one, and evaluates both on test.
"""

import contextlib
import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from rnascl_tf.configs import DistillConfig, OptimConfig, RobustConfig, RunConfig
from rnascl_tf.data import DataSplits
from rnascl_tf.errors import UserInputError
from rnascl_tf.robust import attacks
from rnascl_tf.robust.evaluator import RobustEvaluator
from rnascl_tf.robust.trainer import RobustTrainer
from rnascl_tf.runtime import callbacks as cbs
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.runtime import custom_loop
from rnascl_tf.runtime import distribute
from rnascl_tf.runtime import optimizers
from rnascl_tf.runtime import xla

# --mixed_precision -> the Keras dtype policy the networks are built under (BUILD.md, mixed precision).
PRECISION_POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_FP16_ON_CPU_WARNING = ("--mixed_precision=fp16 on CPU only (%s): float16 kernels are emulated there, slower than "
                        "float32, and their reductions accumulate in float16. fp16 is meant for GPUs; on CPU use "
                        "off or bf16.")

STAGE_TITLES = {"train_teacher": "teacher training", "search": "search", "train": "retraining"}

# Flags that only say where files are or how much is printed: they never change a result, so a
# finished stage may be rerun with other values of them.
INCIDENTAL_FLAGS = ("model_dir", "verbose", "data_dir", "cache_dir", "download")

# Make callbacks once the checkpoint is restored: (stage callbacks, extra run state to save each epoch).
CallbackFactory = Callable[[dict], Tuple[List[keras.callbacks.Callback], Optional[Callable[[], dict]]]]


class Session:
  """A run's seed, folder, strategy, chief role and precision, set up once for one stage.

  Build the networks and optimisers inside `scope()`: the strategy's scope under the run's Keras dtype
  policy, so every layer built there keeps that precision and nothing built after it does.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    batch_size: the global batch size (checked against the number of replicas).
  """

  def __init__(self, run: RunConfig, batch_size: int):
    self.t0 = time.time()
    self.run = run
    keras.utils.set_random_seed(run.seed)
    self.strategy = distribute.make_strategy(run.strategy, run.num_gpus)
    distribute.check_global_batch(batch_size, self.strategy)
    self.chief = distribute.is_chief(self.strategy)

  @contextlib.contextmanager
  def scope(self):
    """`strategy.scope()` with the run's dtype policy as Keras' global one, restored on exit (errors too).

    Layers take the global policy when they are built, so what is built here computes in the run's
    precision (variables float32 in every policy) and keeps it after the exit; the restore keeps the
    policy from leaking into later stages of one process (and into other tests).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[self.run.mixed_precision])
    try:
      with self.strategy.scope():
        yield
    finally:
      keras.config.set_dtype_policy(previous)

  def loss_scaled(self, optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer` in a dynamic `LossScaleOptimizer` under fp16, else itself.

    Build, compile and checkpoint the returned optimiser: its variables hold the loss scale, so a resumed
    run continues with it. The train steps scale their loss with `optimizer.scale_loss` and `apply`
    unscales, skipping steps with non-finite gradients. Passing the wrapper to `compile` also stops Keras
    from wrapping an unbuilt one of its own under a mixed_float16 model.
    """
    if self.run.mixed_precision != "fp16":
      return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)

  def optimizer(self, cfg: OptimConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The weight optimiser (call inside `scope()`), learning rate scaled if asked, loss-scaled under fp16."""
    cfg = dataclasses.replace(cfg, learning_rate=distribute.scaled_learning_rate(
        cfg.learning_rate, self.strategy, self.run.scale_lr_with_replicas))
    return self.loss_scaled(optimizers.make_optimizer(cfg, self.run.epochs * steps_per_epoch, steps_per_epoch))

  def fit(self, model: keras.Model, stage: str, fingerprint: dict, trackables: Dict[str, object],
          dataset_at: Callable[[int], tf.data.Dataset], steps_per_epoch: int, make_callbacks: CallbackFactory,
          on_fresh_start: Optional[Callable[[], None]] = None, logs_fn: Optional[Callable[[], dict]] = None,
          step: Optional[Callable] = None):
    """Restores the last epoch checkpoint, then trains the remaining epochs.

    Args:
      model: the compiled model (built in this session's strategy scope).
      stage: checkpoint stage name ("train_teacher", "search", "train").
      fingerprint: settings a resumed run must share (`configs.fingerprint`).
      trackables: what the checkpoint holds (models, optimisers, seed states).
      dataset_at: the training data starting after the given number of batches (exact resume).
      steps_per_epoch: steps of one epoch.
      make_callbacks: called with the restored run state; returns the stage's callbacks and an
        optional function of extra state saved with each epoch.
      on_fresh_start: called when no epoch was done yet (e.g. a warm start).
      logs_fn: the custom loop's epoch logs (default: all model metrics).
      step: the custom loop's per-replica step (default: `model.step`).

    Returns:
      The `Checkpointer` (its `state` holds the history).
    """
    run = self.run
    devices = xla.replica_devices(self.strategy)
    xla.warn_if_xla_on_cpu(run.jit_compile, devices)
    if run.mixed_precision == "fp16" and all(":CPU:" in d.upper() for d in devices):
      logging.warning(_FP16_ON_CPU_WARNING, ", ".join(devices))
    # Made only now: a stage that fails on bad input while it loads data and models leaves no folder.
    os.makedirs(run.model_dir, exist_ok=True)
    ckpt = custom_loop.checkpointer_for(self.strategy, run.model_dir, stage, fingerprint, trackables)
    start_epoch = ckpt.restore()
    if start_epoch == 0 and on_fresh_start is not None:
      on_fresh_start()
    stage_callbacks, extra_state = make_callbacks(ckpt.state)
    callbacks = [*stage_callbacks, cbs.NanGuard(run.model_dir)]
    if self.chief:  # Only the chief writes TensorBoard logs and artefacts.
      callbacks.append(keras.callbacks.TensorBoard(os.path.join(run.model_dir, "tb"), write_graph=False))
    callbacks.append(cbs.EpochCheckpoint(ckpt, extra_state or dict))
    what = STAGE_TITLES.get(stage, stage)
    if start_epoch >= run.epochs:
      print(f"{run.model_dir}: all {run.epochs} epochs of the {what} already done; using the saved checkpoints")
      return ckpt
    if start_epoch:
      print(f"Resuming the {what} in {run.model_dir} after epoch {start_epoch}/{run.epochs}")
    data = dataset_at(start_epoch * steps_per_epoch)
    if distribute.is_multi_worker(self.strategy):  # Keras 3 fit fails there: the same step in our own loop.
      custom_loop.run_epochs(self.strategy, model, data, steps_per_epoch, start_epoch, run.epochs, callbacks,
                             step=step, logs_fn=logs_fn, verbose=run.keras_verbose() if self.chief else 0,
                             jit_compile=run.jit_compile)
    else:
      model.fit(data, epochs=run.epochs, initial_epoch=start_epoch, steps_per_epoch=steps_per_epoch,
                callbacks=callbacks, verbose=run.keras_verbose())
    return ckpt

  def seconds(self) -> float:
    return time.time() - self.t0


def refuse_finished_with_other_settings(run: RunConfig, stage: str, provenance_path: str,
                                        flag_record: Optional[dict]) -> None:
  """Refuses to redo the end of a finished stage with settings other than those its files record.

  Rerunning a finished stage (all its epochs done) re-derives its files from the saved checkpoint;
  with other settings its provenance would claim values the run never used (--epochs=2 after 4
  epochs, another --learning_rate). Call it before any work: it reads the run state and the
  provenance file and changes nothing.

  Args:
    run: this run's control settings.
    stage: the checkpoint stage name ("train_teacher", "search", "train").
    provenance_path: the stage's file recording its "flags" (teacher_manifest.json, ...); may be missing.
    flag_record: this run's flags (None from the Python API: only the epochs are compared).

  Raises:
    UserInputError: "already done with other settings: ...", naming each difference.
  """
  state_path = os.path.join(run.model_dir, "run_state.json")  # The `Checkpointer`'s run state.
  if not os.path.isfile(state_path):
    return
  state = io_utils.read_json(state_path, f"run state of --model_dir {run.model_dir!r}")
  if not isinstance(state, dict) or state.get("stage") != stage:
    return  # Not this stage's folder: the `Checkpointer` says what is wrong.
  done = int(state.get("epochs_completed", 0))
  if done < run.epochs:  # Not finished: resuming it (or training it longer) is fine.
    return
  diffs = [f"--epochs: {done} done, now {run.epochs}"] if done != run.epochs else []
  provenance = io_utils.read_json(provenance_path, "provenance file") if os.path.isfile(provenance_path) else {}
  recorded = provenance.get("flags") if isinstance(provenance, dict) else None
  recorded = recorded if isinstance(recorded, dict) else {}
  now = json.loads(json.dumps(flag_record or {}, default=str))
  for name in sorted(set(recorded) & set(now) - set(INCIDENTAL_FLAGS) - {"epochs"}):
    if recorded[name] != now[name]:
      diffs.append(f"--{name}: recorded {recorded[name]!r}, now {now[name]!r}")
  if diffs:
    raise UserInputError(f"--model_dir {run.model_dir!r}: the {STAGE_TITLES.get(stage, stage)} is already done with "
                         f"other settings: {'; '.join(diffs)}. Nothing was changed: rerun with the recorded settings "
                         "or use a new --model_dir")


class CleanPgdEvaluator:
  """Clean and PGD accuracy of `net` in inference mode, compiled once and reused every epoch.

  Args:
    net: the model (pixels in [0, 1] -> logits).
    eps: L-inf budget in pixels.
    step_size: PGD step in pixels.
    steps: PGD steps.
  """

  def __init__(self, net: keras.Model, eps: float, step_size: float, steps: int):
    self.config = attacks.AttackConfig(name="pgd", eps=eps, step_size=step_size, steps=steps, rand_init=True)
    self._evaluator = RobustEvaluator(lambda x: net(x, training=False), [self.config])

  def __call__(self, dataset: tf.data.Dataset, max_examples: Optional[int] = None) -> Dict[str, float]:
    """Returns {"clean": acc, "pgd": acc, "num_examples": n, "attack": label}."""
    res = self._evaluator.evaluate(dataset, max_examples=max_examples)
    label = self.config.label()
    return {"clean": float(res["clean"]), "pgd": float(res[label]), "num_examples": int(res["num_examples"]),
            "attack": label}


def fit_robust(run: RunConfig, splits: DataSplits, robust: RobustConfig, optim_cfg: OptimConfig,
               build: Callable[[], Tuple[keras.Model, object]], stage: str, best_path: str, fingerprint: dict,
               last_path: Optional[str] = None, distill: Optional[DistillConfig] = None,
               after_build: Optional[Callable[[keras.Model], None]] = None, objective: Optional[str] = None,
               weights=None) -> dict:
  """Trains `build()`'s network robustly (optionally distilled) with checkpoints and model selection.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    splits: the data; trains on "train_full".
    robust: adversarial-training settings (with the test evaluation's PGD steps).
    optim_cfg: optimiser settings.
    build: called inside the strategy scope; returns (net, teacher_taps or None).
    stage: checkpoint stage name ("train_teacher", "train").
    best_path: `.keras` file of the checkpoint with the best validation metric.
    fingerprint: settings a resumed run must share.
    last_path: optional `.keras` file of the last epoch's model.
    distill: distillation terms (with a teacher from `build`).
    after_build: optional hook on the built net before training (e.g. warm start), skipped on resume.
    objective: base loss of `robust.objectives` (default: the one of `robust.mode`).
    weights: its `objectives.Weights`.

  Returns:
    {"net", "best" (selection record), "test_best", "test_last" (clean/PGD on test), "history",
     "wall_seconds", "steps_per_epoch", "is_chief" (False on non-chief workers, which write nothing)}.
  """
  session = Session(run, splits.config.batch_size)
  steps_per_epoch = run.steps_per_epoch or splits.steps_per_epoch("train_full")
  with session.scope():
    net, teacher = build()
    net(np.zeros((1,) + tuple(splits.info.input_shape), "float32"))
    trainer = RobustTrainer(net, robust, seed=run.seed, teacher=teacher, distill=distill, objective=objective,
                            weights=weights)
    optimizer = session.optimizer(optim_cfg, steps_per_epoch)
    optimizer.build(net.trainable_variables)  # Pre-built inside the scope (docs/keras_notes.md note 2).
    trainer.compile(optimizer=optimizer, jit_compile=run.jit_compile)

  val_ds = splits.dataset("val", training=False)
  val_eval = CleanPgdEvaluator(net, robust.eps, robust.step_size, robust.val_attack_steps)
  # Robust training keeps the checkpoint with the best validation PGD accuracy; plain training (a
  # baseline) the best clean one: its PGD accuracy is ~0 throughout and would pick at random.
  monitor = "val_clean_acc" if robust.mode == "standard" else "val_pgd_acc"

  def evaluate_val():
    m = val_eval(val_ds, robust.val_examples or None)
    return {"val_clean_acc": m["clean"], "val_pgd_acc": m["pgd"]}

  def save_best(epoch, metrics):
    if session.chief:  # Only the chief writes artefacts; other workers evaluate in step and keep nothing.
      io_utils.atomic_save_keras(net, best_path)

  validation = None

  def make_callbacks(state):
    nonlocal validation
    validation = cbs.RobustValidation(evaluate_val, monitor, on_improve=save_best, best=state.get("best"))
    return [validation], lambda: {"best": validation.best}

  ckpt = session.fit(trainer, stage, fingerprint,
                     {"net": net, "optimizer": optimizer, "seed_state": trainer.seed_generator.state},
                     lambda skip: splits.dataset("train_full", training=True, skip_batches=skip), steps_per_epoch,
                     make_callbacks, on_fresh_start=(lambda: after_build(net)) if after_build else None,
                     step=lambda batch: trainer.step(*batch))
  if last_path and session.chief:
    io_utils.atomic_save_keras(net, last_path)

  test_ds = splits.dataset("test", training=False)
  test_last = CleanPgdEvaluator(net, robust.eps, robust.step_size, robust.test_attack_steps)(test_ds)
  # A non-chief worker does not read the chief's best file (it may still be being replaced).
  best_net = (io_utils.load_keras_model(best_path, "best checkpoint")
              if session.chief and os.path.exists(best_path) else net)
  test_best = CleanPgdEvaluator(best_net, robust.eps, robust.step_size, robust.test_attack_steps)(test_ds)
  return {"net": best_net, "best": validation.best, "test_best": test_best, "test_last": test_last,
          "history": ckpt.state.get("history", []), "wall_seconds": session.seconds(),
          "steps_per_epoch": steps_per_epoch, "is_chief": session.chief}
