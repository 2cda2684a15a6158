"""The teacher-training driver: strategy, data, model, fit with checkpoints, best-by-val-PGD, manifest."""

import os
import time
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from rnascl_tf import attacks
from rnascl_tf import callbacks as cbs
from rnascl_tf import data as data_lib
from rnascl_tf import io_utils
from rnascl_tf import optim
from rnascl_tf import teacher_io
from rnascl_tf import teachers
from rnascl_tf.checkpointing import Checkpointer
from rnascl_tf.config import OptimConfig, RobustConfig, RunConfig
from rnascl_tf.distribute import make_strategy
from rnascl_tf.robust_trainer import RobustTrainer


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
    self._evaluator = attacks.RobustEvaluator(lambda x: net(x, training=False), [self.config])

  def __call__(self, dataset: tf.data.Dataset, max_examples: Optional[int] = None) -> Dict[str, float]:
    """Returns {"clean": acc, "pgd": acc, "num_examples": n, "attack": label}."""
    res = self._evaluator.evaluate(dataset, max_examples=max_examples)
    label = self.config.label()
    return {"clean": float(res["clean"]), "pgd": float(res[label]), "num_examples": int(res["num_examples"]),
            "attack": label}


def train_teacher(run: RunConfig, data_cfg: data_lib.DataConfig, robust: RobustConfig, optim_cfg: OptimConfig,
                  arch: str, width: float = 1.0, depth: int = 0, layers_spec: str = "auto",
                  test_attack_steps: int = 20, flag_record: Optional[dict] = None,
                  fingerprint: Optional[dict] = None) -> dict:
  """Trains a built-in teacher adversarially and writes teacher.keras + teacher_manifest.json.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    data_cfg: dataset settings.
    robust: adversarial-training settings (mode, eps...).
    optim_cfg: optimiser settings.
    arch: built-in architecture name (teachers.TEACHER_ARCHS).
    width: width multiplier.
    depth: depth for depth-configurable architectures (0 = default).
    layers_spec: tap layers recorded in the manifest ("auto", "auto_block", names).
    test_attack_steps: PGD steps of the final test evaluation.
    flag_record: flag values recorded in the manifest.
    fingerprint: settings a resumed run must share.

  Returns:
    A summary dict (paths, test metrics, best epoch, wall time).
  """
  t0 = time.time()
  keras.utils.set_random_seed(run.seed)
  os.makedirs(run.model_dir, exist_ok=True)
  strategy = make_strategy(run.strategy, run.num_gpus)
  splits = data_lib.load_splits(data_cfg)
  info = splits.info
  steps_per_epoch = run.steps_per_epoch or splits.steps_per_epoch("train_full")
  with strategy.scope():
    net = teachers.build_teacher(arch, info.input_shape, info.num_classes, info.mean, info.std,
                                 **_knobs(arch, width, depth))
    net(np.zeros((1,) + tuple(info.input_shape), "float32"))
    trainer = RobustTrainer(net, robust, seed=run.seed)
    optimizer = optim.make_optimizer(optim_cfg, run.epochs * steps_per_epoch, steps_per_epoch)
    optimizer.build(net.trainable_variables)  # KERAS3.md rule 2: pre-build inside the scope.
    trainer.compile(optimizer=optimizer, jit_compile=run.jit_compile)
  ckpt = Checkpointer(run.model_dir, "train_teacher", fingerprint or {"arch": arch, "seed": run.seed},
                      {"net": net, "optimizer": optimizer, "seed_state": trainer.seed_generator.state})
  start_epoch = ckpt.restore()
  best_path = os.path.join(run.model_dir, "teacher.keras")

  val_ds = splits.dataset("val", training=False)
  val_eval = CleanPgdEvaluator(net, robust.eps, robust.step_size, robust.val_attack_steps)

  def evaluate_val():
    m = val_eval(val_ds, robust.val_examples or None)
    return {"val_clean_acc": m["clean"], "val_pgd_acc": m["pgd"]}

  # Robust training keeps the checkpoint with the best validation PGD accuracy; plain training (a
  # baseline) the best clean one: its PGD accuracy is ~0 throughout and would pick at random.
  monitor = "val_clean_acc" if robust.mode == "standard" else "val_pgd_acc"
  validation = cbs.RobustValidation(evaluate_val, monitor,
                                     on_improve=lambda epoch, m: io_utils.atomic_save_keras(net, best_path),
                                     best=ckpt.state.get("best"))
  callbacks = [cbs.NanGuard(run.model_dir), validation,
               keras.callbacks.TensorBoard(os.path.join(run.model_dir, "tb"), write_graph=False),
               cbs.EpochCheckpoint(ckpt, lambda: {"best": validation.best})]
  if start_epoch < run.epochs:
    if start_epoch:
      print(f"Resuming {run.model_dir} after epoch {start_epoch}/{run.epochs}")
    data = splits.dataset("train_full", training=True, skip_batches=start_epoch * steps_per_epoch)
    trainer.fit(data, epochs=run.epochs, initial_epoch=start_epoch,
                steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=run.verbose)
  else:
    print(f"{run.model_dir}: all {run.epochs} epochs already done; evaluating the best checkpoint")

  best = io_utils.load_keras_model(best_path, "teacher") if os.path.exists(best_path) else net
  test = CleanPgdEvaluator(best, robust.eps, robust.step_size, test_attack_steps)(
      splits.dataset("test", training=False))
  taps = teacher_io.TeacherTaps(best, teacher_io.resolve_teacher_layers(best, layers_spec))
  wall = time.time() - t0
  metrics = {"test": test, "best": validation.best, "epochs": run.epochs,
             "history": ckpt.state.get("history", []), "wall_seconds_this_run": round(wall, 1)}
  manifest = teacher_io.teacher_manifest(best, arch, taps, {
      "dataset": info.name, "metrics": metrics, "flags": flag_record or {}, "seed": run.seed,
      "robust_training": {"mode": robust.mode, "eps": robust.eps, "step_size": robust.step_size,
                          "steps": robust.steps}})
  manifest_path = os.path.join(run.model_dir, "teacher_manifest.json")
  io_utils.atomic_write_json(manifest_path, manifest)
  return {"teacher_path": best_path, "manifest_path": manifest_path, "test": test, "test_attack": test["attack"],
          "best": validation.best, "wall_seconds": wall}


def _knobs(arch: str, width: float, depth: int) -> dict:
  knobs = {}
  if width != 1.0:
    knobs["width_multiplier"] = width
  if depth:
    knobs["depth"] = depth
  return knobs
