"""The search entry point end to end: CLI run, kill-and-resume equivalence, bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.stages import search as searching
from rnascl_tf.configs import DataConfig, DistillConfig, OptimConfig, RunConfig, SearchConfig, TeacherConfig
from rnascl_tf.errors import UserInputError


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
  return helpers.save_tiny_teacher(str(tmp_path_factory.mktemp("teacher") / "teacher.keras"))


def _args(model_dir, teacher, epochs, extra=()):
  return [f"--model_dir={model_dir}", f"--teacher_path={teacher}", "--dataset=digits", "--image_size=8",
          "--max_train_examples=300", "--batch_size=16", f"--epochs={epochs}", "--steps_per_epoch=6",
          "--search_space=tiny", "--tau_decay=0.5", "--lr_schedule=constant", "--verbose=2", "--seed=3", *extra]


def test_cli_search_end_to_end(teacher_path, tmp_path):
  proc = helpers.run_cli("rnascl_tf.search", *_args(tmp_path, teacher_path, 2, ["--weight_only_epochs=1"]))
  g = genotype_lib.load_genotype(str(tmp_path / "genotype.json"))
  assert g["input_shape"] == [8, 8, 1] and g["search_space"]["name"] == "tiny"
  assert g["cost"]["exact_child"]["flops"] == pytest.approx(g["cost"]["expected_one_hot"]["flops"])
  assert len(g["student_layers"]) == 10 and g["flags"]["epochs"] == 2
  for png in ("tutor_heatmap.png", "widths.png", "search_curves.png"):
    data = (tmp_path / png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  assert "tutor map:" in proc.stdout and "tutor entropy per epoch:" in proc.stdout
  state = json.loads((tmp_path / "run_state.json").read_text())
  # Epoch 1 is weight-only: no architecture terms are logged for it; epoch 2 has them.
  assert "arch_loss" not in state["history"][0] and "arch_loss" in state["history"][1]
  assert state["history"][1]["temperature"] == pytest.approx(5.0 * np.exp(-0.5), rel=1e-5)


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_genotype(teacher_path, tmp_path):
  epochs = 4
  full, killed = tmp_path / "full", tmp_path / "killed"
  helpers.run_cli("rnascl_tf.search", *_args(full, teacher_path, epochs))
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.Popen([sys.executable, "-m", "rnascl_tf.search", *_args(killed, teacher_path, epochs)],
                          cwd=helpers.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  state_path = killed / "run_state.json"
  try:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if state_path.exists() and json.loads(state_path.read_text()).get("epochs_completed", 0) >= 1:
        break
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  done = json.loads(state_path.read_text())["epochs_completed"]
  assert 1 <= done < epochs, f"the kill came too late ({done} epochs done)"
  out = helpers.run_cli("rnascl_tf.search", *_args(killed, teacher_path, epochs))
  assert f"after epoch {done}/{epochs}" in out.stdout
  g1 = genotype_lib.load_genotype(str(full / "genotype.json"))
  g2 = genotype_lib.load_genotype(str(killed / "genotype.json"))
  assert [b["width"] for b in g1["blocks"]] == [b["width"] for b in g2["blocks"]]
  assert [s["tutor"] for s in g1["student_layers"]] == [s["tutor"] for s in g2["student_layers"]]
  np.testing.assert_allclose([s["tutor_probs"] for s in g1["student_layers"]],
                             [s["tutor_probs"] for s in g2["student_layers"]], atol=1e-4)
  for b1, b2 in zip(g1["blocks"], g2["blocks"]):
    np.testing.assert_allclose(b1["width_probs"], b2["width_probs"], atol=1e-4)


def _search(model_dir, teacher, layers="auto", image_size=8, gamma_cl=1.0):
  return searching.run_search(
      run=RunConfig(model_dir=str(model_dir), epochs=1, steps_per_epoch=1, verbose=0),
      data_cfg=DataConfig(dataset="digits", image_size=image_size, batch_size=16, max_train_examples=200),
      optim_cfg=OptimConfig(optimizer="adam", learning_rate=0.004),
      cfg=SearchConfig(distill=DistillConfig(gamma_cl=gamma_cl), arch_weight_decay=0.0, tau_decay=0.1),
      teacher=TeacherConfig(path=teacher, layers=layers))


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": "stem/conv,no_such_layer"}, "--teacher_layers"),
    ({"image_size": 12}, "--teacher_path"),
])
def test_bad_teacher_inputs_are_named(teacher_path, tmp_path, kwargs, message):
  with pytest.raises(UserInputError, match=message):
    _search(tmp_path, teacher_path, **kwargs)


def test_missing_teacher_file_is_named_and_leaves_no_run_folder(tmp_path):
  with pytest.raises(UserInputError, match="no such file"):
    _search(tmp_path / "run", str(tmp_path / "absent.keras"))
  assert not (tmp_path / "run").exists()  # The folder is made only once the inputs are loaded.


def test_resume_with_incompatible_flags_is_refused(teacher_path, tmp_path):
  _search(tmp_path, teacher_path, gamma_cl=1.0)
  with pytest.raises(UserInputError, match=r"refusing to resume.*search\.distill\.gamma_cl: saved 1\.0, now 2\.0"):
    _search(tmp_path, teacher_path, gamma_cl=2.0)
