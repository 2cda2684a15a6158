"""Tests for the rnascl_tf.evaluate entry point: reports, progress, bad flags, exit status 4 on a failed check."""

import json
import os
import subprocess
import sys

import keras
import pytest

import helpers
from rnascl_tf.configs import DataConfig
from rnascl_tf.evaluation import sanity
from rnascl_tf.models.layers import PixelNormalization
from rnascl_tf.runtime import artefacts as io_utils


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
  """An MLP trained on 8x8 digits for a few epochs (~90% clean), saved as .keras."""
  from rnascl_tf import data as data_lib
  splits = data_lib.load_splits(DataConfig(dataset="digits", image_size=8))
  x, y = splits.numpy("train_full")
  keras.utils.set_random_seed(0)
  model = keras.Sequential([
      keras.Input((8, 8, 1)), PixelNormalization(splits.info.mean, splits.info.std), keras.layers.Flatten(),
      keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
  model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x, y, batch_size=64, epochs=8, verbose=0)
  path = str(tmp_path_factory.mktemp("digits") / "mlp.keras")
  io_utils.atomic_save_keras(model, path)
  return path


def test_cli_writes_reports(digits_model, tmp_path):
  out = tmp_path / "eval"
  proc = helpers.run_cli("rnascl_tf.evaluate", f"--model={digits_model}", "--dataset=digits", "--image_size=8",
                         "--num_examples=32", "--batch_size=32", "--attacks=fgsm,pgd5", "--eps_sweep=0,4/255,8/255",
                         "--blackbox_queries=100", f"--output_dir={out}")
  result = json.loads((out / "eval.json").read_text())
  assert result["num_examples"] == 32 and result["dataset"]["name"] == "digits"
  assert result["model"]["path"] == os.path.abspath(digits_model) and result["clean_accuracy"] >= 0.7
  assert [e["attack"] for e in result["attacks"]] == ["fgsm", "pgd", "square"]
  assert result["sanity"]["passed"] and result["wall_seconds"] > 0
  assert (out / "eval.md").exists() and (out / "eps_sweep.png").exists()
  assert "worst case over 3 attacks" in proc.stdout and str(out / "eval.json") in proc.stdout
  assert "eval batch 1 (32/32 examples) [0/" in proc.stdout  # --verbose=1 (default): progress lines


@pytest.mark.parametrize("args, flag", [
    (["--autoattack=bogus"], "--autoattack"), (["--eps=lots"], "--eps"), (["--attacks=pgd"], "--attacks")])
def test_cli_bad_flags_give_one_clear_line(tmp_path, args, flag):
  proc = helpers.run_cli("rnascl_tf.evaluate", f"--model={tmp_path / 'm.keras'}", *args, check=False)
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and flag in errors[0] and "Traceback" not in proc.stderr


def test_cli_missing_model_names_the_flag(tmp_path):
  proc = helpers.run_cli("rnascl_tf.evaluate", f"--model={tmp_path / 'nope.keras'}", check=False)
  assert proc.returncode == 2 and "error: --model: no such file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
  """An untrained tiny teacher saved as .keras (8x8x1 digits, 10 classes)."""
  return helpers.save_tiny_teacher(str(tmp_path_factory.mktemp("models") / "teacher.keras"))


def test_cli_failed_sanity_check_exits_4_after_writing(tiny_teacher, tmp_path):
  # A negative black-box tolerance makes the masking check fail on any model: the real exit path.
  out = tmp_path / "eval"
  code = ("import runpy, sys; import rnascl_tf.evaluation.sanity as s; s.blackbox_tolerance = lambda n: -1.0; "
          f"sys.argv = ['evaluate', '--model={tiny_teacher}', '--dataset=digits', '--image_size=8', "
          f"'--num_examples=8', '--attacks=fgsm', '--eps_sweep=none', '--blackbox_queries=5', '--output_dir={out}']; "
          "runpy.run_module('rnascl_tf.evaluate', run_name='__main__')")
  proc = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, capture_output=True, text=True,
                        timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert proc.returncode == sanity.SANITY_EXIT_CODE == 4, proc.stderr[-2000:]
  assert "error: evaluation sanity check(s) failed: blackbox_not_stronger" in proc.stderr
  assert "Traceback" not in proc.stderr
  result = json.loads((out / "eval.json").read_text())
  assert result["sanity"]["failed"] == ["blackbox_not_stronger"]
  assert "FAILED: blackbox_not_stronger" in (out / "eval.md").read_text()


class _Rounding(keras.layers.Layer):
  """8-bit input quantisation by tf.round: a step without a gradient (None, not zero)."""

  def call(self, x):
    return keras.ops.round(x * 255.0) / 255.0


@pytest.mark.slow  # ~15-25 s on 2 cores: an export and an evaluation; the engine test covers the logic fast.
def test_export_with_a_round_step_exits_4_with_white_box_numbers_marked_invalid(tmp_path):
  from absl import flags
  from rnascl_tf import evaluate
  from rnascl_tf.serving import export

  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((8, 8, 1)), _Rounding(), PixelNormalization([0.5], [0.25]),
                            keras.layers.Flatten(), keras.layers.Dense(10)])
  path = export.export_for_serving(model, str(tmp_path / "serving"), "rounded", 1)
  fv = flags.FlagValues()
  evaluate.define_flags(fv)
  out = tmp_path / "eval"
  fv(["evaluate", f"--model={path}", "--dataset=digits", "--image_size=8", "--num_examples=16", "--batch_size=16",
      "--attacks=fgsm", "--eps_sweep=none", "--blackbox_queries=20", f"--output_dir={out}"])
  assert evaluate.main(["evaluate"], fv) == sanity.SANITY_EXIT_CODE == 4
  result = json.loads((out / "eval.json").read_text())
  assert result["input_gradient"] == "absent" and result["white_box_valid"] is False
  fgsm, square = result["attacks"]
  assert fgsm["valid"] is False and "valid" not in square and square["family"] == "black-box"
