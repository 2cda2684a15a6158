"""External and built-in teachers: candidate layers, tap extraction, validation, loading, manifest, CLI."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl import flags

import helpers
from rnascl_tf import list_layers
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.models import teachers
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.errors import UserInputError
from rnascl_tf.models.layers import PixelNormalization

_SHAPE = (16, 16, 3)
_CLASSES = 3


def _external(normalise=True, classes=_CLASSES, softmax=False):
  """A tiny functional teacher: conv-BN-ReLU, a residual block, a strided conv, logits."""
  inp = keras.Input(_SHAPE, name="images")
  h = PixelNormalization([0.5] * 3, [0.25] * 3, name="norm")(inp) if normalise else inp
  a = keras.layers.ReLU(name="relu_a")(keras.layers.BatchNormalization(name="bn_a")(
      keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(h)))
  b = keras.layers.BatchNormalization(name="bn_b")(keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(a))
  out = keras.layers.ReLU(name="block1_out")(keras.layers.Add(name="block1_add")([a, b]))
  c = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv_c")(out)
  logits = keras.layers.Dense(classes, activation="softmax" if softmax else None, name="logits")(
      keras.layers.GlobalAveragePooling2D(name="pool")(c))
  model = keras.Model(inp, logits, name="ext")
  # Non-default BN statistics, so inference and training mode give different activations.
  for bn in ("bn_a", "bn_b"):
    layer = model.get_layer(bn)
    layer.moving_mean.assign(np.full((4,), 0.3, "float32"))
    layer.moving_variance.assign(np.full((4,), 2.0, "float32"))
  return model


def _pixels(shape=_SHAPE):
  return np.random.default_rng(0).uniform(0, 1, (2,) + shape).astype("float32")


@pytest.fixture(scope="module")
def ext():
  return _external()


@pytest.fixture(scope="module")
def small_cnn():
  return teachers.build_teacher("small_cnn", (16, 16, 1), 10, [0.3], [0.4], width_multiplier=0.5)


def test_external_candidates_follow_bn_and_activation(ext):
  cands = teacher_io.list_candidate_layers(ext)
  # conv_a -> bn_a -> relu_a; conv_b -> bn_b (feeds an Add, no activation); conv_c stays itself.
  assert cands["conv"] == [("relu_a", (16, 16, 4)), ("bn_b", (16, 16, 4)), ("conv_c", (8, 8, 8))]
  # The Add is followed by a ReLU whose name also matches the name rule: listed once.
  assert cands["block"] == [("block1_out", (16, 16, 4))]


def test_resolve_specs(ext, small_cnn):
  assert teacher_io.resolve_teacher_layers(ext, "auto") == ["relu_a", "bn_b", "conv_c"]
  assert teacher_io.resolve_teacher_layers(ext, "auto_block") == ["block1_out"]
  assert teacher_io.resolve_teacher_layers(ext, " conv_a, block1_add ") == ["conv_a", "block1_add"]
  assert teacher_io.resolve_teacher_layers(ext, ["pool"]) == ["pool"]
  assert teacher_io.resolve_teacher_layers(small_cnn, "auto_conv") == small_cnn.tap_names("conv")
  assert len(teacher_io.resolve_teacher_layers(small_cnn, "auto_block")) == 3


@pytest.mark.parametrize("spec,pattern", [
    ("relu_a,nope", r"--teacher_layers.*'nope'.*relu_a.*rnascl_tf\.list_layers"),
    ("", r"--teacher_layers is empty"),
    ("relu_a,relu_a", r"more than once"),
])
def test_resolve_errors(ext, spec, pattern):
  with pytest.raises(UserInputError, match=pattern):
    teacher_io.resolve_teacher_layers(ext, spec)


def test_resolve_error_for_builtin_lists_tap_names(small_cnn):
  with pytest.raises(UserInputError, match=r"stem/conv.*list_layers"):
    teacher_io.resolve_teacher_layers(small_cnn, "stage9/block0/out")


def test_taps_external_equal_real_layer_outputs_in_inference_mode(ext):
  x = _pixels()
  taps = teacher_io.TeacherTaps(ext, ["relu_a", "conv_c", "block1_add"])
  logits, acts = taps(x)
  assert taps.output_shapes == [(16, 16, 4), (8, 8, 8), (16, 16, 4)]
  np.testing.assert_allclose(logits.numpy(), ext(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
  # Reference computed layer by layer, independently of the sub-model.
  get = ext.get_layer
  a = get("relu_a")(get("bn_a")(get("conv_a")(get("norm")(x)), training=False))
  b = get("bn_b")(get("conv_b")(a), training=False)
  np.testing.assert_allclose(acts[0].numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(acts[2].numpy(), (a + b).numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(acts[1].numpy(), get("conv_c")(get("block1_out")(a + b)).numpy(), rtol=1e-5, atol=1e-6)
  trained_mode = get("bn_a")(get("conv_a")(get("norm")(x)), training=True)
  assert not np.allclose(get("relu_a")(trained_mode).numpy(), acts[0].numpy())


def test_taps_builtin_and_sequential(small_cnn):
  x = _pixels((16, 16, 1))
  names = ["stage3/block0/out", "stem/conv"]
  taps = teacher_io.TeacherTaps(small_cnn, names)
  logits, acts = taps(x)
  ref_logits, ref = small_cnn.call_with_taps(x, training=False)
  assert taps.output_shapes == [(4, 4, 32), (16, 16, 8)]
  np.testing.assert_array_equal(logits.numpy(), ref_logits.numpy())
  np.testing.assert_array_equal(acts[0].numpy(), ref["stage3/block0/out"].numpy())

  seq = keras.Sequential([
      keras.Input((8, 8, 1)), keras.layers.Rescaling(1.0, name="scale"),
      keras.layers.Conv2D(2, 3, name="conv"), keras.layers.ReLU(name="relu"),
      keras.layers.Flatten(), keras.layers.Dense(2, name="logits")])
  assert teacher_io.list_candidate_layers(seq)["conv"] == [("relu", (6, 6, 2))]
  seq_taps = teacher_io.TeacherTaps(seq, teacher_io.resolve_teacher_layers(seq, "auto"))
  x8 = _pixels((8, 8, 1))
  _, (relu,) = seq_taps(x8)
  np.testing.assert_allclose(relu.numpy(), np.maximum(seq.get_layer("conv")(x8).numpy(), 0), rtol=1e-6)
  teacher_io.validate_teacher(seq, (8, 8, 1), 2)  # Rescaling counts as in-model pixel scaling.


class _Foreign(keras.Model):

  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(3)

  def call(self, x):
    return self.dense(keras.ops.mean(x, axis=(1, 2)))


def test_foreign_subclassed_model_is_refused():
  model = _Foreign()
  model(_pixels())
  for fn in (lambda: teacher_io.TeacherTaps(model, ["dense"]), lambda: teacher_io.list_candidate_layers(model),
             lambda: teacher_io.validate_teacher(model, _SHAPE, _CLASSES)):
    with pytest.raises(UserInputError, match="functional"):
      fn()


def test_validate_errors(ext):
  teacher_io.validate_teacher(ext, _SHAPE, _CLASSES)
  with pytest.raises(UserInputError, match=r"--teacher_path=t\.keras.*\(16, 16, 3\).*\(32, 32, 3\)"):
    teacher_io.validate_teacher(ext, (32, 32, 3), _CLASSES, path="t.keras")
  with pytest.raises(UserInputError, match=r"--teacher_path.*logits of shape \(batch, 10\).*\(2, 3\)"):
    teacher_io.validate_teacher(ext, _SHAPE, 10)
  with pytest.raises(UserInputError, match=r"--teacher_path.*softmax.*logits"):
    teacher_io.validate_teacher(_external(softmax=True), _SHAPE, _CLASSES)
  raw = _external(normalise=False)
  with pytest.raises(UserInputError, match=r"--teacher_path.*PixelNormalization.*--teacher_assume_pixel_input"):
    teacher_io.validate_teacher(raw, _SHAPE, _CLASSES)
  teacher_io.validate_teacher(raw, _SHAPE, _CLASSES, assume_pixel_input=True)


def test_load_teacher_and_manifest(ext, small_cnn, tmp_path):
  path = str(tmp_path / "ext.keras")
  io_utils.atomic_save_keras(ext, path)
  model, taps = teacher_io.load_teacher(path, _SHAPE, _CLASSES, "auto")
  assert taps.layer_names == ["relu_a", "bn_b", "conv_c"]
  x = _pixels()
  np.testing.assert_allclose(taps(x)[1][2].numpy(), teacher_io.TeacherTaps(ext, ["conv_c"])(x)[1][0].numpy(),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(UserInputError, match="--teacher_layers"):
    teacher_io.load_teacher(path, _SHAPE, _CLASSES, "missing_layer")

  info = {"metrics": {"clean_acc": np.float32(0.5)}, "seed": 3}
  manifest = teacher_io.teacher_manifest(model, "external", taps, info)
  assert manifest["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
  assert manifest["tap_layers"][2] == {"name": "conv_c", "shape": [8, 8, 8]}
  assert manifest["num_classes"] == _CLASSES and manifest["params"] == ext.count_params()
  mpath = str(tmp_path / "teacher_manifest.json")
  io_utils.atomic_write_json(mpath, manifest)
  back = teacher_io.read_teacher_manifest(mpath)
  assert back["tap_layers"] == manifest["tap_layers"] and back["seed"] == 3 and back["input_shape"] == [16, 16, 3]
  with pytest.raises(ValueError, match="override"):
    teacher_io.teacher_manifest(model, "external", taps, {"arch": "x"})

  builtin = teacher_io.teacher_manifest(small_cnn, "small_cnn", teacher_io.TeacherTaps(small_cnn, ["stem/conv"]), {})
  assert builtin["normalization"] == {"mean": [0.3], "std": [0.4]} and builtin["num_classes"] == 10
  json.dumps(builtin)


def test_load_teacher_builtin(small_cnn, tmp_path):
  path = str(tmp_path / "t.keras")
  small_cnn.save(path)
  model, taps = teacher_io.load_teacher(path, (16, 16, 1), 10, "auto_block")
  assert isinstance(model, teachers.SmallCNN) and taps.layer_names == small_cnn.tap_names("block")
  with pytest.raises(UserInputError, match=r"--teacher_path.*logits of shape \(batch, 7\)"):
    teacher_io.load_teacher(path, (16, 16, 1), 7, "auto")


def test_bad_files(tmp_path):
  garbage = tmp_path / "corrupt.keras"
  garbage.write_bytes(os.urandom(64))
  with pytest.raises(UserInputError, match=r"teacher \(--teacher_path\).*corrupt\.keras"):
    teacher_io.load_teacher(str(garbage), _SHAPE, _CLASSES, "auto")
  other = tmp_path / "teacher.h5"
  other.write_bytes(b"\x89HDF")
  with pytest.raises(UserInputError, match=r"--teacher_path.*not a \.keras file"):
    teacher_io.load_teacher(str(other), _SHAPE, _CLASSES, "auto")
  with pytest.raises(UserInputError, match="no such file"):
    teacher_io.load_teacher(str(tmp_path / "none.keras"), _SHAPE, _CLASSES, "auto")

  for name, text, pattern in [
      ("foreign.json", json.dumps({"schema": "rnascl_tf/genotype", "version": 1}), "not a teacher manifest"),
      ("list.json", "[1, 2]", "not a teacher manifest"),
      ("newer.json", json.dumps({"schema": teacher_io.MANIFEST_SCHEMA, "version": 2}), "version 2"),
      ("partial.json", json.dumps({"schema": teacher_io.MANIFEST_SCHEMA, "version": 1}), "incomplete"),
      ("broken.json", "{not json", "not valid JSON")]:
    (tmp_path / name).write_text(text)
    with pytest.raises(UserInputError, match=pattern):
      teacher_io.read_teacher_manifest(str(tmp_path / name))


def test_load_messages_say_what_is_wrong_with_the_file(small_cnn, tmp_path):
  text = tmp_path / "notes.keras"
  text.write_text("my teacher is in runs/a\n")
  truncated = tmp_path / "cut.keras"
  small_cnn.save(str(truncated))
  truncated.write_bytes(truncated.read_bytes()[:2000])
  for path in (text, truncated):
    with pytest.raises(UserInputError, match=rf"teacher \(--teacher_path\): '.*{path.name}' is not a valid "
                                             r"\.keras archive \(not a zip file"):
      teacher_io.load_teacher(str(path), (16, 16, 1), 10)
  folder = tmp_path / "run.keras"
  folder.mkdir()
  with pytest.raises(UserInputError, match=r"'.*run\.keras' is a directory, not a \.keras file"):
    teacher_io.load_teacher(str(folder), (16, 16, 1), 10)
  # A teacher path that came from a genotype is named as such, not as a flag the user never passed.
  with pytest.raises(UserInputError, match=r"^teacher recorded in genotype 'g\.json': '.*notes\.keras' is not a"):
    teacher_io.load_teacher(str(text), (16, 16, 1), 10, source="teacher recorded in genotype 'g.json'")


def test_list_layers_main_prints_groups(small_cnn, tmp_path, capsys):
  path = str(tmp_path / "t.keras")
  small_cnn.save(path)
  fv = flags.FlagValues()
  list_layers.define_flags(fv)
  fv(["list_layers", f"--model={path}"])
  assert list_layers.main(["list_layers"], fv) == 0
  out = capsys.readouterr().out
  assert "conv taps (7;" in out and "block taps (3;" in out
  assert "stem/conv" in out and "16x16x8" in out and "stage3/block0/out" in out
  assert out.index("conv taps") < out.index("block taps")

  fv(["list_layers", f"--model={tmp_path / 'missing.keras'}", "--kind=conv"])
  with pytest.raises(UserInputError, match="--model"):  # The runner turns it into one line and exit 2.
    list_layers.main(["list_layers"], fv)


def test_list_layers_cli_entry_point():
  # Without --model it fails before importing TensorFlow, so this subprocess is cheap.
  proc = subprocess.run([sys.executable, "-m", "rnascl_tf.list_layers"], cwd=helpers.REPO, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and "--model is required" in proc.stderr
