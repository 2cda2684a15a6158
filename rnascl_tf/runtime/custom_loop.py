"""A custom training loop for the strategies Keras 3 `fit` cannot drive (multi-worker).

Keras 3.15 `fit` fails at its first step under MultiWorkerMirroredStrategy (keras-team/keras#20585).
`run_epochs` drives the SAME per-replica step `fit` runs (`SearchModel.step`, `RobustTrainer.step`)
with `strategy.run` inside a `tf.function`, over `strategy.experimental_distribute_dataset`, updates
the model's Keras metrics there, and calls the same Keras callbacks as `fit` (epoch checkpoints, NaN
guard, temperature schedule, validation, TensorBoard) with logs read from those metrics. It works
under every strategy; the drivers use it only for `--strategy=multi_worker` and keep `fit` for the
others.

Artefacts and preemption: only the chief writes (see `distribute.is_chief`). `checkpointer_for`
gives the chief the stage's normal `Checkpointer` and every other worker a `WorkerCheckpointer`,
which restores from the chief's `<model_dir>/ckpt` (the run folder must be on storage every worker
can read, as for Keras' BackupAndRestore) and saves, in step with the chief, into a temporary
per-worker folder that it deletes at once (the standard multi-worker pattern: saving may involve
collective ops, so every worker saves). A killed worker or chief is restarted by rerunning all the
workers' commands: they resume after the last completed epoch and skip the data already consumed.
"""

import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import keras
import tensorflow as tf

from rnascl_tf.runtime import distribute
from rnascl_tf.runtime.checkpointing import Checkpointer

DatasetOrFn = Union[tf.data.Dataset, Callable[[], tf.data.Dataset]]


def default_logs(model: keras.Model) -> Dict[str, Any]:
  """{name: result} of the model's metrics (read in cross-replica context: aggregated over replicas)."""
  return {m.name: m.result() for m in model.metrics}


def run_epochs(strategy: tf.distribute.Strategy, model: keras.Model, data: DatasetOrFn, steps_per_epoch: int,
               initial_epoch: int, epochs: int, callbacks: Sequence[keras.callbacks.Callback] = (),
               step: Optional[Callable[[Any], Any]] = None,
               logs_fn: Optional[Callable[[], Dict[str, Any]]] = None,
               verbose: int = 0, jit_compile: bool = False) -> List[Dict[str, float]]:
  """Trains `model` for epochs [initial_epoch, epochs) with `strategy.run(step)` and Keras callbacks.

  The model, its optimisers and metrics must have been created (and the optimisers built) inside
  `strategy.scope()`. Metrics are reset at the start of every epoch; the logs passed to
  `on_train_batch_end` and `on_epoch_end` are the metrics' running results, aggregated over all
  replicas and workers (exact global means, not a mean of per-replica means).

  A callback that calls `model.make_train_function(force=True)` (Keras' way to make `fit` re-trace,
  e.g. `WeightOnlyWarmup` flipping a Python flag) makes this loop re-trace its step too.

  Args:
    strategy: the strategy the model was built under (any; multi-worker is the reason this exists).
    model: a compiled Keras model (callbacks see it as `self.model`).
    data: a batched dataset at the GLOBAL batch size that yields at least
      `(epochs - initial_epoch) * steps_per_epoch` batches, or a function returning one.
    steps_per_epoch: steps per epoch.
    initial_epoch: first epoch to run (0-based; > 0 when resuming).
    epochs: run until this epoch count.
    callbacks: Keras callbacks, called as `fit` calls them.
    step: the per-replica step, called with one per-replica batch (default `model.step`).
    logs_fn: returns the logs dict of tensors in cross-replica context (default: every metric).
    verbose: 0 silent, 1 progress bar, 2 one line per epoch (Keras' ProgbarLogger).
    jit_compile: XLA-compile the per-replica step (as `fit` does with `jit_compile=True`).

  Returns:
    The epoch logs, one dict per epoch run (callbacks may have added entries, e.g. validation).
  """
  step = step or model.step
  logs_fn = logs_fn or (lambda: default_logs(model))
  dataset = data() if callable(data) else data
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  cb = keras.callbacks.CallbackList(list(callbacks), add_history=False, add_progbar=verbose != 0, model=model,
                                    verbose=verbose, epochs=epochs, steps=steps_per_epoch)

  def make_function():
    replica_step = tf.function(step, jit_compile=True) if jit_compile else step

    @tf.function
    def train_function(it):
      strategy.run(replica_step, args=(next(it),))
      return logs_fn()

    return train_function

  history: List[Dict[str, float]] = []
  function, traced_for = None, object()
  model.stop_training = False
  cb.on_train_begin()
  for epoch in range(initial_epoch, epochs):
    for metric in model.metrics:
      metric.reset_state()
    cb.on_epoch_begin(epoch)
    if function is None or model.train_function is not traced_for:
      function, traced_for = make_function(), model.train_function
    logs: Dict[str, float] = {}
    for batch in range(steps_per_epoch):
      cb.on_train_batch_begin(batch)
      logs = {k: float(v) for k, v in function(iterator).items()}
      cb.on_train_batch_end(batch, logs)
      if model.stop_training:
        break
    epoch_logs = dict(logs)
    cb.on_epoch_end(epoch, epoch_logs)
    history.append(epoch_logs)
    if model.stop_training:
      break
  cb.on_train_end()
  return history


class WorkerCheckpointer(Checkpointer):
  """The `Checkpointer` of a non-chief worker: restores the chief's checkpoint, writes nothing lasting.

  `restore` reads the chief's `run_state.json` and `<model_dir>/ckpt` (so a restarted worker
  resumes from the same epoch as the chief); `save` writes the same checkpoint into
  `<model_dir>/.worker_tmp/<task>_<id>/` and deletes it (every worker saves in step, as
  MultiWorkerMirroredStrategy expects), and keeps the run state in memory only.

  Args:
    model_dir, stage, fingerprint, trackables, max_to_keep: as for `Checkpointer`.
    task: "<task type>_<task id>", names the temporary folder.
  """

  def __init__(self, model_dir: str, stage: str, fingerprint: Dict[str, Any], trackables: Dict[str, Any],
               task: str, max_to_keep: int = 2):
    super().__init__(model_dir, stage, fingerprint, trackables, write=False, max_to_keep=max_to_keep)
    # Read-only view of the chief's checkpoints (never saved through).
    self._manager = tf.train.CheckpointManager(self._ckpt, os.path.join(model_dir, "ckpt"), max_to_keep=max_to_keep)
    self.temp_dir = os.path.join(model_dir, ".worker_tmp", task)

  def save(self, epochs_completed: int, extra: Optional[Dict[str, Any]] = None) -> None:
    self._ckpt.write(os.path.join(self.temp_dir, f"ckpt-{epochs_completed}"))
    shutil.rmtree(self.temp_dir, ignore_errors=True)
    self.state = {**self.state, **(extra or {}), "epochs_completed": epochs_completed}


def checkpointer_for(strategy: tf.distribute.Strategy, model_dir: str, stage: str, fingerprint: Dict[str, Any],
                     trackables: Dict[str, Any]) -> Checkpointer:
  """The chief's (or a single process's) `Checkpointer`, or a `WorkerCheckpointer` on other workers."""
  if distribute.is_chief(strategy):
    return Checkpointer(model_dir, stage, fingerprint, trackables)
  task_type, task_id = distribute.task_info(strategy)
  return WorkerCheckpointer(model_dir, stage, fingerprint, trackables, task=f"{task_type}_{task_id}")
