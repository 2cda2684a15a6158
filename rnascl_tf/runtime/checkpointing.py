"""Resumable run checkpoints: tf.train.Checkpoint of model/optimisers/RNG + a JSON run state.

A run folder holds `ckpt/` (the last two epoch checkpoints) and `run_state.json` (stage, config
fingerprint, epochs completed, best metric, per-epoch history). Re-running with the same
`--model_dir` resumes after the last completed epoch; a different fingerprint is refused.
"""

import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from absl import logging

from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.configs import fingerprint_differences
from rnascl_tf.errors import TrainingDiverged, UserInputError  # noqa: F401  (re-exported)

STATE_SCHEMA = "rnascl_tf/run_state"
STATE_VERSION = 1


def flat_variables(trackables: Dict[str, Any]) -> Dict[str, Any]:
  """The variables of models, optimisers and variables, keyed by owner and position, for `tf.train.Checkpoint`.

  Keras 3 objects are checkpointed as flat variable lists: the TF object graph of Keras 3 layers
  misses the non-trainable variables of nested layers (BatchNorm moving statistics were silently
  not restored in a check). Keys are positions, not paths, because Keras uniquifies names per
  process ("sgd_1/..."); a different architecture fails on the count or on a shape. The run
  checkpoints and the search-to-retraining warm start both read checkpoints through these keys.

  Args:
    trackables: {name: Keras model | optimiser | variable}.

  Returns:
    {"<name>.<position, 5 digits>": tf.Variable}, e.g. {"model.00012": ...}.

  Example:
  >>> import keras
  >>> dense = keras.layers.Dense(2)
  >>> dense.build((None, 3))
  >>> sorted(flat_variables({"step": tf.Variable(0), "dense": dense}))
  ['dense.00000', 'dense.00001', 'step.00000']
  """
  flat = {}
  for name, obj in trackables.items():
    variables = obj.variables if hasattr(obj, "variables") else [obj]
    for i, v in enumerate(variables):
      flat[f"{name}.{i:05d}"] = v if isinstance(v, tf.Variable) else v.value
  return flat


def _normalise(obj: Any) -> Any:
  # Round-trip through JSON so tuples/lists and floats compare the same before and after saving.
  return json.loads(json.dumps(obj, default=str))


def rolled_back_state(state: Dict[str, Any], epochs: int) -> Dict[str, Any]:
  """The run state as it was after `epochs` epochs: later history rows dropped, the best metric re-derived.

  Args:
    state: a run state (history rows carry their "epoch" and the logged metrics).
    epochs: the epoch count to roll back to.

  Returns:
    A new state dict; a "best" entry ({"metric", "value", "epoch", "metrics"}) of a dropped epoch is
    replaced by the best of the kept rows (the first of equal values, as `RobustValidation` keeps it).

  Example:
  >>> rows = [{"epoch": 1, "acc": .5}, {"epoch": 2, "acc": .4}, {"epoch": 3, "acc": .7}]
  >>> s = {"epochs_completed": 3, "history": rows,
  ...      "best": {"metric": "acc", "value": .7, "epoch": 3, "metrics": {"acc": .7}}}
  >>> r = rolled_back_state(s, 2)
  >>> r["epochs_completed"], len(r["history"]), r["best"]["epoch"], r["best"]["value"]
  (2, 2, 1, 0.5)
  """
  history = [row for row in state.get("history", []) if row.get("epoch", 0) <= epochs]
  out = {**state, "epochs_completed": epochs, "history": history}
  best = state.get("best")
  if isinstance(best, dict) and best.get("epoch", 0) > epochs:
    metric = best.get("metric")
    rows = [row for row in history if metric in row]
    top = max(rows, key=lambda row: row[metric], default=None)  # max() keeps the first of equal values.
    out["best"] = None if top is None else {
        "metric": metric, "value": top[metric], "epoch": top["epoch"],
        "metrics": {k: top[k] for k in best.get("metrics", {}) if k in top}}
  return out


class Checkpointer:
  """Saves and restores one training stage's state in `model_dir`.

  Args:
    model_dir: the run folder.
    stage: stage name ("train_teacher", "search", "train"); a folder of another stage is refused.
    fingerprint: JSON-able dict of the settings a resumed run must share (architecture, data,
      seed, batch size...). Settings left out (e.g. epochs, verbosity) may change on resume.
    trackables: objects for `tf.train.Checkpoint` (models, optimisers, variables).
    write: False on non-chief workers: they save to a scratch folder that is deleted (the standard
      multi-worker pattern), so only the chief's files are kept.
    max_to_keep: epoch checkpoints kept.

  Example:
  >>> import shutil, tempfile, keras
  >>> run_dir = tempfile.mkdtemp()
  >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  >>> ck = Checkpointer(run_dir, "train_teacher", {"arch": "dense"}, {"model": model})
  >>> ck.restore()  # Epochs completed: none in a fresh folder.
  0
  >>> ck.save(1, {"best": None})
  >>> Checkpointer(run_dir, "train_teacher", {"arch": "dense"}, {"model": model}).restore()
  1
  >>> shutil.rmtree(run_dir)
  """

  def __init__(self, model_dir: str, stage: str, fingerprint: Dict[str, Any], trackables: Dict[str, Any],
               write: bool = True, max_to_keep: int = 2):
    self.model_dir = model_dir
    self.stage = stage
    self.fingerprint = _normalise(fingerprint)
    self.write = write
    self._ckpt = tf.train.Checkpoint(**flat_variables(trackables))
    ckpt_dir = os.path.join(model_dir, "ckpt") if write else os.path.join(model_dir, ".scratch_ckpt")
    self._manager = tf.train.CheckpointManager(self._ckpt, ckpt_dir, max_to_keep=max_to_keep)
    self.state: Dict[str, Any] = {}

  @property
  def state_path(self) -> str:
    return os.path.join(self.model_dir, "run_state.json")

  def restore(self) -> int:
    """Restores the last checkpoint if the folder has one; returns the number of completed epochs."""
    if not os.path.exists(self.state_path):
      if self._manager.latest_checkpoint:
        raise UserInputError(f"--model_dir {self.model_dir!r} has checkpoints but no run_state.json; "
                             "it was not written by this stage or is corrupt. Use a new --model_dir.")
      return 0
    state = io_utils.read_json(self.state_path, f"run state of --model_dir {self.model_dir!r}")
    if not isinstance(state, dict) or state.get("schema") != STATE_SCHEMA:
      raise UserInputError(f"{self.state_path!r} is not an rnascl_tf run state; use a new --model_dir")
    if state.get("version") != STATE_VERSION:
      raise UserInputError(f"{self.state_path!r} has run-state version {state.get('version')}, "
                           f"this rnascl_tf writes version {STATE_VERSION}; use a new --model_dir")
    if state.get("stage") != self.stage:
      raise UserInputError(f"--model_dir {self.model_dir!r} holds a {state.get('stage')!r} run, not a "
                           f"{self.stage!r} run; use another --model_dir")
    diffs = fingerprint_differences(state.get("fingerprint", {}), self.fingerprint)
    if diffs:
      detail = "; ".join(diffs)
      raise UserInputError(f"refusing to resume the run in --model_dir {self.model_dir!r} with incompatible "
                           f"settings ({detail}). Use the original flags or a new --model_dir.")
    done = int(state.get("epochs_completed", 0))
    # The checkpoint of the epoch the run state records, not simply the newest: a kill between
    # writing checkpoint k+1 and the run state must resume at epoch k with epoch-k weights.
    latest = self._checkpoint_of(done)
    if latest is None:
      if done:
        raise UserInputError(f"--model_dir {self.model_dir!r}: run_state.json says {done} epochs are done but "
                             f"their checkpoint is missing from ckpt/; use a new --model_dir")
      return 0
    error = self._try_restore(latest)
    if error is not None:
      # A corrupt newest checkpoint (disk full, a copy cut short) while the one before is intact:
      # resume from the earlier epoch instead of refusing the whole run.
      earlier = [n for n in self._numbers() if n < done]
      if not earlier or self._try_restore(self._checkpoint_of(earlier[-1])) is not None:
        raise UserInputError(f"checkpoint {latest!r} cannot be restored ({error}); use a new --model_dir") from error
      logging.warning("checkpoint %r cannot be restored (%s); resuming from the intact checkpoint of epoch %d "
                      "instead (epochs %d-%d will be trained again)", latest, error, earlier[-1], earlier[-1] + 1,
                      done)
      done, state = earlier[-1], rolled_back_state(state, earlier[-1])
      if self.write:
        io_utils.atomic_write_json(self.state_path, state)
    self.state = state
    return done

  def _numbers(self) -> List[int]:
    """Epoch numbers of the kept checkpoints, ascending."""
    return sorted(int(p.rsplit("-", 1)[1]) for p in self._manager.checkpoints)

  def _checkpoint_of(self, epochs: int) -> Optional[str]:
    matching = [p for p in self._manager.checkpoints if p.endswith(f"-{epochs}")]
    return matching[-1] if matching else None

  def _try_restore(self, path: str) -> Optional[Exception]:
    """Restores `path` into the trackables; returns the error instead of raising it."""
    try:
      self._ckpt.restore(path).assert_consumed()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as e:  # IndexError: a truncated data file.
      return e
    return None

  def save(self, epochs_completed: int, extra: Optional[Dict[str, Any]] = None) -> None:
    """Writes the checkpoint for `epochs_completed`, then the run state (atomically)."""
    self._manager.save(checkpoint_number=epochs_completed)
    if not self.write:
      return
    self.state = {**self.state, **(extra or {}), "schema": STATE_SCHEMA, "version": STATE_VERSION,
                  "stage": self.stage, "fingerprint": self.fingerprint, "epochs_completed": epochs_completed}
    io_utils.atomic_write_json(self.state_path, self.state)
