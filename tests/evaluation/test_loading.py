"""Tests for rnascl_tf.evaluation.loading: bad model paths and shapes that do not match the dataset."""

import pytest

import helpers
from rnascl_tf.configs import DataConfig, EvalConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.evaluation import engine, loading


def test_bad_model_paths_name_the_flag(tiny_files, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes.txt").write_text("hello")
  (tmp_path / "broken.keras").write_bytes(b"not a zip")
  for path, why in [(str(tmp_path / "missing.keras"), "no such file"), (str(tmp_path / "empty"), "--model"),
                    (str(tmp_path / "notes.txt"), "neither a .keras file"),
                    (str(tmp_path / "broken.keras"), "is not a valid .keras archive (not a zip file"),
                    ("", "required")]:
    with pytest.raises(UserInputError, match="--model") as info:
      loading.load_model(path)
    assert why in str(info.value)


def test_input_shape_mismatch_names_the_flag(tiny_files):
  with pytest.raises(UserInputError, match=r"--model: .* takes images of shape \(8, 8, 1\) but "
                                           r"--dataset=digits .*\(16, 16, 1\)"):
    engine.evaluate_path(tiny_files.teacher, DataConfig(dataset="digits", image_size=16), EvalConfig(num_examples=4))
  loaded = loading.load_model(tiny_files.teacher)
  with pytest.raises(UserInputError, match="--model: .* 10 .*3 classes|--model: .*has 3 classes"):
    loading.check_model_matches(loaded, helpers.SHAPE, 3)
