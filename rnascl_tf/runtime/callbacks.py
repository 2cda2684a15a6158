"""Keras callbacks shared by the training stages: NaN guard, robust validation, epoch checkpoints."""

import math
import time
from typing import Callable, Dict, Optional

import keras

from rnascl_tf.runtime.checkpointing import Checkpointer, TrainingDiverged


class NanGuard(keras.callbacks.Callback):
  """Stops training with a clear `TrainingDiverged` error when a logged loss is NaN or infinite.

  Raised at the batch where it happens, before the epoch's checkpoint, so the last good checkpoint
  in the run folder is kept and a rerun resumes from it.
  """

  def __init__(self, model_dir: str):
    super().__init__()
    self.model_dir = model_dir
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    for name, value in (logs or {}).items():
      if "loss" in name and not math.isfinite(float(value)):
        raise TrainingDiverged(
            f"{name} became {float(value)} at epoch {self._epoch + 1}, step {batch + 1}. Training stopped; "
            f"the last good checkpoint in {self.model_dir!r} is kept (rerun to resume from it). "
            "Lower --learning_rate, or check the data and the loss weights.")


class RobustValidation(keras.callbacks.Callback):
  """At each epoch end, runs `evaluate_fn()` (clean + PGD on the validation split) and keeps the best.

  The returned metrics are added to the epoch logs (so TensorBoard and the history see them); when
  `monitor` improves, `on_improve(epoch, metrics)` is called (e.g. to save the best model).

  Args:
    evaluate_fn: returns a dict of metrics, e.g. {"val_clean_acc": .9, "val_pgd_acc": .5}.
    monitor: the metric to maximise.
    on_improve: callback for a new best.
    best: the best value so far (restored on resume).
  """

  def __init__(self, evaluate_fn: Callable[[], Dict[str, float]], monitor: str,
               on_improve: Callable[[int, Dict[str, float]], None], best: Optional[dict] = None):
    super().__init__()
    self.evaluate_fn = evaluate_fn
    self.monitor = monitor
    self.on_improve = on_improve
    self.best = best

  def on_epoch_end(self, epoch, logs=None):
    metrics = self.evaluate_fn()
    if logs is not None:
      logs.update(metrics)
    value = metrics[self.monitor]
    if self.best is None or value > self.best["value"]:
      self.best = {"metric": self.monitor, "value": float(value), "epoch": epoch + 1,
                   "metrics": {k: float(v) for k, v in metrics.items()}}
      self.on_improve(epoch, metrics)


class EpochCheckpoint(keras.callbacks.Callback):
  """Saves a resumable checkpoint and the run state (history, extra state) after every epoch.

  Args:
    checkpointer: the stage's `Checkpointer`.
    extra_state: returns JSON-able state to store beside the history (e.g. the best metric).
  """

  def __init__(self, checkpointer: Checkpointer, extra_state: Callable[[], dict] = dict):
    super().__init__()
    self.checkpointer = checkpointer
    self.extra_state = extra_state
    self._t0 = time.time()

  def on_epoch_begin(self, epoch, logs=None):
    self._t0 = time.time()

  def on_epoch_end(self, epoch, logs=None):
    history = list(self.checkpointer.state.get("history", []))
    row = {"epoch": epoch + 1, "seconds": round(time.time() - self._t0, 2)}
    row.update({k: float(v) for k, v in (logs or {}).items() if _is_number(v)})
    history.append(row)
    self.checkpointer.save(epoch + 1, {"history": history, **self.extra_state()})


def _is_number(v) -> bool:
  try:
    float(v)
    return True
  except (TypeError, ValueError):
    return False
