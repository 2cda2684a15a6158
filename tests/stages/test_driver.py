"""Tests for rnascl_tf.stages.driver: a finished stage is not redone with other settings."""

import json

import pytest

from rnascl_tf.configs import (DataConfig, DistillConfig, OptimConfig, RetrainConfig, RobustConfig, RunConfig,
                               SearchConfig, TeacherArchConfig, TeacherConfig)
from rnascl_tf.errors import UserInputError
from rnascl_tf.stages import driver
from rnascl_tf.stages import retrain as retraining
from rnascl_tf.stages import search as searching
from rnascl_tf.stages import train_teacher as teacher_training

FLAGS = {"model_dir": "runs/a", "epochs": 4, "learning_rate": 0.05, "verbose": 1, "seed": 0, "data_dir": None}


def _finished(model_dir, stage, provenance, epochs=4, flags=None):
  """A run folder whose run state says `epochs` epochs of `stage` are done, with a provenance file."""
  model_dir.mkdir(exist_ok=True)
  (model_dir / "run_state.json").write_text(json.dumps({"stage": stage, "epochs_completed": epochs}))
  (model_dir / provenance).write_text(json.dumps({"flags": FLAGS if flags is None else flags}))
  return str(model_dir / provenance)


def _check(model_dir, epochs, record, stage="train_teacher", provenance="teacher_manifest.json"):
  driver.refuse_finished_with_other_settings(RunConfig(model_dir=str(model_dir), epochs=epochs), stage,
                                             str(model_dir / provenance), record)


def test_same_or_incidental_settings_may_rederive(tmp_path):
  _finished(tmp_path, "train_teacher", "teacher_manifest.json")
  _check(tmp_path, 4, FLAGS)
  _check(tmp_path, 4, {**FLAGS, "model_dir": "/abs/runs/a", "verbose": 2, "data_dir": "/data"})
  _check(tmp_path, 4, None)  # The Python API records no flags: the epochs are compared.
  _check(tmp_path, 6, {**FLAGS, "epochs": 6, "learning_rate": 0.5})  # Not finished: training on is resuming.
  _check(tmp_path / "new", 2, FLAGS)  # No run yet.
  _check(tmp_path, 2, FLAGS, stage="search")  # Another stage's folder: the checkpointer refuses it later.


@pytest.mark.parametrize("epochs, record, expected", [
    (2, {**FLAGS, "epochs": 2, "learning_rate": 0.7},
     "--epochs: 4 done, now 2; --learning_rate: recorded 0.05, now 0.7"),
    (2, None, "--epochs: 4 done, now 2"),
    (4, {**FLAGS, "seed": 3}, "--seed: recorded 0, now 3"),
])
def test_other_settings_are_refused_naming_each(tmp_path, epochs, record, expected):
  _finished(tmp_path, "train_teacher", "teacher_manifest.json")
  with pytest.raises(UserInputError) as e:
    _check(tmp_path, epochs, record)
  assert str(e.value) == (f"--model_dir {str(tmp_path)!r}: the teacher training is already done with other settings: "
                          f"{expected}. Nothing was changed: rerun with the recorded settings or use a new --model_dir")


def test_every_stage_refuses_before_any_work(tmp_path):
  # The folders hold no checkpoint, data or model: a stage that got past the check would fail otherwise.
  run = lambda name: RunConfig(model_dir=str(tmp_path / name), epochs=2)  # noqa: E731
  _finished(tmp_path / "teacher", "train_teacher", "teacher_manifest.json")
  with pytest.raises(UserInputError, match="teacher training is already done with other settings: --epochs: 4"):
    teacher_training.train_teacher(run("teacher"), DataConfig(), RobustConfig(), OptimConfig(), TeacherArchConfig())
  _finished(tmp_path / "search", "search", "genotype.json")
  with pytest.raises(UserInputError, match="search is already done with other settings: --epochs: 4 done, now 2; "
                                           "--learning_rate: recorded 0.05, now 0.5"):
    searching.run_search(run("search"), DataConfig(), OptimConfig(), SearchConfig(), TeacherConfig(path="t.keras"),
                         flag_record={**FLAGS, "learning_rate": 0.5})
  _finished(tmp_path / "train", "train", "train_summary.json")
  with pytest.raises(UserInputError, match="retraining is already done with other settings: --epochs: 4"):
    retraining.retrain(run("train"), DataConfig(), RobustConfig(), OptimConfig(), RetrainConfig(genotype="g.json"),
                       DistillConfig(), TeacherConfig())
