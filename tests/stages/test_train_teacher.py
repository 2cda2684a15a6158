"""train_teacher: a tiny robust teacher end to end, its artefacts, resume, and bad flags."""

import json
import os

import numpy as np
import pytest

import helpers
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.stages import train_teacher as teacher_training
from rnascl_tf.configs import DataConfig, OptimConfig, RobustConfig, RunConfig, TeacherArchConfig
from rnascl_tf.errors import UserInputError

DATA = DataConfig(dataset="digits", image_size=8, batch_size=32, max_train_examples=400, max_test_examples=64)
ROBUST = RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=2, val_attack_steps=2, val_examples=32,
                      test_attack_steps=3)


def _train(model_dir, epochs):
  return teacher_training.train_teacher(
      run=RunConfig(model_dir=str(model_dir), epochs=epochs, steps_per_epoch=3, verbose=0), data_cfg=DATA,
      robust=ROBUST, optim_cfg=OptimConfig(learning_rate=0.05), teacher=TeacherArchConfig(width=0.25))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("teacher")
  return model_dir, _train(model_dir, epochs=1)


def test_writes_teacher_and_manifest(trained):
  model_dir, summary = trained
  manifest = json.loads((model_dir / "teacher_manifest.json").read_text())
  assert manifest["schema"] == "rnascl_tf/teacher_manifest" and manifest["arch"] == "small_cnn"
  assert manifest["input_shape"] == [8, 8, 1] and manifest["num_classes"] == 10
  assert [t["name"] for t in manifest["tap_layers"]][0] == "stem/conv"
  test = manifest["metrics"]["test"]
  assert 0.0 <= test["pgd"] <= test["clean"] <= 1.0 and test["num_examples"] == 64
  assert manifest["metrics"]["best"]["metric"] == "val_pgd_acc" and manifest["metrics"]["best"]["epoch"] == 1
  teacher = io_utils.load_keras_model(str(model_dir / "teacher.keras"), "teacher")
  x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype("float32")
  assert teacher(x).shape == (2, 10)
  assert os.path.isdir(model_dir / "tb") and (model_dir / "run_state.json").exists()


def test_resume_continues_from_last_epoch(trained, tmp_path):
  model_dir, _ = trained
  copy = tmp_path / "resumed"
  import shutil
  shutil.copytree(model_dir, copy)
  summary = _train(copy, epochs=2)
  state = json.loads((copy / "run_state.json").read_text())
  assert state["epochs_completed"] == 2
  assert [h["epoch"] for h in state["history"]] == [1, 2]  # epoch 1 was not redone


def test_resume_with_other_architecture_is_refused(trained, tmp_path):
  model_dir, _ = trained
  with pytest.raises(UserInputError, match=r"refusing to resume.*teacher\.width: saved 0\.25, now 0\.5"):
    teacher_training.train_teacher(
        run=RunConfig(model_dir=str(model_dir), epochs=2, steps_per_epoch=1, verbose=0), data_cfg=DATA,
        robust=ROBUST, optim_cfg=OptimConfig(learning_rate=0.05), teacher=TeacherArchConfig(width=0.5))


@pytest.mark.parametrize("args, message", [
    (["--dataset=mnist_typo"], "--dataset"),
    (["--eps=lots"], "--eps"),
    (["--teacher_arch=vgg"], "--teacher_arch"),
])
def test_cli_bad_flags_give_one_clear_line(tmp_path, args, message):
  proc = helpers.run_cli("rnascl_tf.train_teacher", f"--model_dir={tmp_path}", "--epochs=1", *args, check=False)
  assert proc.returncode == 2
  assert message in proc.stderr and "Traceback" not in proc.stderr


LEGACY_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "teacher_run_9697409")


def test_run_folder_of_an_earlier_version_resumes(tmp_path):
  # A 1-epoch teacher run written by commit 9697409 (flag-name fingerprint, the block classes' original
  # names in teacher.keras). Made with: python -m rnascl_tf.train_teacher --dataset=digits --image_size=8
  # --max_train_examples=300 --max_test_examples=32 --batch_size=32 --steps_per_epoch=2 --val_examples=16
  # --val_attack_steps=1 --attack_steps=1 --test_attack_steps=1 --eps=0.1 --step_size=0.05
  # --teacher_width=0.25 --epochs=1.
  import shutil
  model_dir = tmp_path / "teacher"
  shutil.copytree(LEGACY_RUN, model_dir)
  old = io_utils.load_keras_model(str(model_dir / "teacher.keras"), "teacher")
  x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype("float32")
  assert old(x).shape == (2, 10)
  data = DataConfig(dataset="digits", image_size=8, batch_size=32, max_train_examples=300, max_test_examples=32)
  robust = RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=1, val_attack_steps=1, val_examples=16,
                        test_attack_steps=1)
  run = RunConfig(model_dir=str(model_dir), epochs=2, steps_per_epoch=2, verbose=0)
  teacher_training.train_teacher(run, data, robust, OptimConfig(learning_rate=0.1), TeacherArchConfig(width=0.25))
  state = json.loads((model_dir / "run_state.json").read_text())
  assert state["epochs_completed"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
  assert "teacher.width" in state["fingerprint"]  # Saved again in this version's form.
  # Other settings than the recorded ones are still refused, named by their flag.
  with pytest.raises(UserInputError, match="refusing to resume.*teacher_width: saved 0.25, now 0.5"):
    shutil.rmtree(model_dir)
    shutil.copytree(LEGACY_RUN, model_dir)
    teacher_training.train_teacher(run, data, robust, OptimConfig(learning_rate=0.1), TeacherArchConfig(width=0.5))
