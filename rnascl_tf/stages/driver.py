"""The shared driver of robust training stages (teacher training and student retraining).

Model Garden's split: the entry point parses flags, this driver opens the strategy scope, builds
the model and its trainer there, fits with resumable checkpoints, keeps the best checkpoint by
validation-split PGD accuracy (never the test split) and the last one, and evaluates both on test.
"""

import dataclasses
import os
import time
from typing import Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from rnascl_tf.robust import attacks
from rnascl_tf.runtime import callbacks as cbs
from rnascl_tf.data import datasets as data_lib
from rnascl_tf.runtime import distribute
from rnascl_tf.runtime import custom_loop as distributed_loop
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.runtime import optimizers as optim
from rnascl_tf.runtime import xla as step_compile
from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig
from rnascl_tf.robust.trainer import RobustTrainer
from rnascl_tf.configs import DistillConfig


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


def fit_robust(run: RunConfig, splits: data_lib.DataSplits, robust: RobustConfig, optim_cfg: OptimConfig,
               build: Callable[[], Tuple[keras.Model, object]], stage: str, best_path: str,
               last_path: Optional[str] = None, distill: Optional[DistillConfig] = None,
               fingerprint: Optional[dict] = None, test_attack_steps: int = 20,
               after_build: Optional[Callable[[keras.Model], None]] = None) -> dict:
  """Trains `build()`'s network robustly (optionally distilled) with checkpoints and model selection.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    splits: the data; trains on "train_full" unless a distillation stage asks otherwise.
    robust: adversarial-training settings.
    optim_cfg: optimiser settings.
    build: called inside the strategy scope; returns (net, teacher_taps or None).
    stage: checkpoint stage name ("train_teacher", "train").
    best_path: `.keras` file of the checkpoint with the best validation metric.
    last_path: optional `.keras` file of the last epoch's model.
    distill: distillation terms (with a teacher from `build`).
    fingerprint: settings a resumed run must share.
    test_attack_steps: PGD steps of the final test evaluation.
    after_build: optional hook on the built net before training (e.g. warm start), skipped on resume.

  Returns:
    {"net", "best" (selection record), "test_best", "test_last" (clean/PGD on test), "history",
     "wall_seconds", "steps_per_epoch", "is_chief" (False on non-chief workers, which must write nothing)}.
  """
  t0 = time.time()
  keras.utils.set_random_seed(run.seed)
  os.makedirs(run.model_dir, exist_ok=True)
  strategy = distribute.make_strategy(run.strategy, run.num_gpus)
  distribute.check_global_batch(splits.config.batch_size, strategy)
  chief = distribute.is_chief(strategy)
  optim_cfg = dataclasses.replace(optim_cfg, learning_rate=distribute.scaled_learning_rate(
      optim_cfg.learning_rate, strategy, run.scale_lr_with_replicas))
  steps_per_epoch = run.steps_per_epoch or splits.steps_per_epoch("train_full")
  info = splits.info
  with strategy.scope():
    net, teacher = build()
    net(np.zeros((1,) + tuple(info.input_shape), "float32"))
    trainer = RobustTrainer(net, robust, seed=run.seed, teacher=teacher, distill=distill)
    optimizer = optim.make_optimizer(optim_cfg, run.epochs * steps_per_epoch, steps_per_epoch)
    optimizer.build(net.trainable_variables)  # KERAS3.md rule 2: pre-build inside the scope.
    trainer.compile(optimizer=optimizer, jit_compile=run.jit_compile)
  step_compile.warn_if_xla_on_cpu(run.jit_compile, step_compile.replica_devices(strategy))
  ckpt = distributed_loop.checkpointer_for(strategy, run.model_dir, stage, fingerprint or {"seed": run.seed},
                                          {"net": net, "optimizer": optimizer,
                                           "seed_state": trainer.seed_generator.state})
  start_epoch = ckpt.restore()
  if start_epoch == 0 and after_build is not None:
    after_build(net)

  val_ds = splits.dataset("val", training=False)
  val_eval = CleanPgdEvaluator(net, robust.eps, robust.step_size, robust.val_attack_steps)

  def evaluate_val():
    m = val_eval(val_ds, robust.val_examples or None)
    return {"val_clean_acc": m["clean"], "val_pgd_acc": m["pgd"]}

  # Robust training keeps the checkpoint with the best validation PGD accuracy; plain training (a
  # baseline) the best clean one: its PGD accuracy is ~0 throughout and would pick at random.
  monitor = "val_clean_acc" if robust.mode == "standard" else "val_pgd_acc"
  def save_best(epoch, metrics):
    if chief:  # Only the chief writes artefacts; other workers evaluate in step and keep nothing.
      io_utils.atomic_save_keras(net, best_path)

  validation = cbs.RobustValidation(evaluate_val, monitor, on_improve=save_best, best=ckpt.state.get("best"))
  callbacks = [cbs.NanGuard(run.model_dir), validation]
  if chief:
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(run.model_dir, "tb"), write_graph=False))
  callbacks.append(cbs.EpochCheckpoint(ckpt, lambda: {"best": validation.best}))
  if start_epoch < run.epochs:
    if start_epoch:
      print(f"Resuming {run.model_dir} after epoch {start_epoch}/{run.epochs}")
    data = splits.dataset("train_full", training=True, skip_batches=start_epoch * steps_per_epoch)
    if distribute.is_multi_worker(strategy):  # Keras 3 fit is broken there (KERAS3.md): same step, own loop.
      distributed_loop.run_epochs(strategy, trainer, data, steps_per_epoch, start_epoch, run.epochs, callbacks,
                                  step=lambda batch: trainer.step(*batch), verbose=run.verbose if chief else 0,
                                  jit_compile=run.jit_compile)
    else:
      trainer.fit(data, epochs=run.epochs, initial_epoch=start_epoch, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, verbose=run.verbose)
  else:
    print(f"{run.model_dir}: all {run.epochs} epochs already done; evaluating the saved checkpoints")
  if last_path and chief:
    io_utils.atomic_save_keras(net, last_path)

  test_ds = splits.dataset("test", training=False)
  test_last = CleanPgdEvaluator(net, robust.eps, robust.step_size, test_attack_steps)(test_ds)
  # A non-chief worker does not read the chief's best file (it may still be being replaced).
  best_net = io_utils.load_keras_model(best_path, "best checkpoint") if chief and os.path.exists(best_path) else net
  test_best = CleanPgdEvaluator(best_net, robust.eps, robust.step_size, test_attack_steps)(test_ds)
  return {"net": best_net, "best": validation.best, "test_best": test_best, "test_last": test_last,
          "history": ckpt.state.get("history", []), "wall_seconds": time.time() - t0,
          "steps_per_epoch": steps_per_epoch, "is_chief": chief}
