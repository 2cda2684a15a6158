"""Child net: equivalence with the supernet's argmax architecture, choices, .keras round trip."""

import dataclasses

import keras
import numpy as np
import pytest

from rnascl_tf.nas import search_space as ss
from rnascl_tf.models.child import ChildNet, build_child_from_choices, warm_start_from_supernet
from rnascl_tf.errors import UserInputError
from rnascl_tf.models.supernet import Supernet

SHAPE = (16, 16, 3)
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]

# Residual blocks with changing widths, a stride-2 block, searched expansions and e == 1 blocks.
EXPANSION_SPACE = {"name": "exp", "stem_width": 8, "student_layers": "block_outputs", "stages": [
    {"blocks": 1, "stride": 1, "max_width": 8, "width_options": [8, 4], "expansions": [1]},
    {"blocks": 2, "stride": 2, "max_width": 16, "width_options": {"count": 4, "step": 4},
     "expansions": [2, 4], "kernel": 5, "activation": "relu"}]}
HEAD_SPACE = {"name": "head", "stem_width": 8, "stem_stride": 2, "head_width": 24, "stages": [
    {"blocks": 2, "stride": 1, "max_width": 8, "width_options": [8, 6, 2], "expansions": [3]},
    {"blocks": 1, "stride": 2, "max_width": 12, "width_options": [12, 4], "expansions": [2]}]}


def _randomise(net, rng):
  """Random BN statistics and arch logits, so that masked channels would show if mishandled."""
  for v in net.variables:
    path = v.path
    if "moving_variance" in path or path.endswith("/gamma"):
      v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    elif "moving_mean" in path or path.endswith("/beta"):
      v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    elif "_logits_" in path:
      v.assign(rng.normal(0, 1, v.shape).astype("float32"))


@pytest.mark.parametrize("space", [
    ss.get_space("tiny"), ss.space_from_dict(EXPANSION_SPACE), ss.space_from_dict(HEAD_SPACE)],
    ids=["tiny", "expansions", "head"])
@pytest.mark.parametrize("seed", [0, 1])
def test_warm_started_child_equals_supernet_argmax(space, seed):
  rng = np.random.default_rng(seed)
  supernet = Supernet(space, SHAPE, 5, MEAN, STD)
  _randomise(supernet, rng)
  if seed == 1:
    for v in supernet.expansion_logits:  # the random draw favours e = 4; cover e = 2 too
      v.assign([1.0, 0.0])
  child = build_child_from_choices(space, supernet.derive(), SHAPE, 5, MEAN, STD)
  warm_start_from_supernet(child, supernet)
  x = rng.random((2,) + SHAPE, dtype=np.float32)
  out = supernet.forward(x, training=False, mode="argmax")
  logits, taps = child.call_with_taps(x, training=False)
  assert np.max(np.abs(out["logits"] - logits)) < 1e-5
  assert child.student_layer_names == supernet.student_layer_names
  # Supernet taps are the child's taps padded with zero channels.
  for name, big, small in zip(child.student_layer_names, out["taps"], taps):
    big, small = np.asarray(big), np.asarray(small)
    c = small.shape[-1]
    assert big.shape[:-1] == small.shape[:-1], name
    assert np.max(np.abs(big[..., :c] - small)) < 1e-5, name
    assert np.all(big[..., c:] == 0), name
  # The energy taps the training steps use are the same for both, and equal sum_c tap^2.
  _, child_energies = child.call_with_taps(x, training=False, tap_energies=True)
  for keep in ("masked", "unmasked"):
    super_energies = supernet.forward(x, training=False, mode="argmax", tap_energies=keep)["taps"]
    for name, e_child, e_super in zip(child.student_layer_names, child_energies, super_energies):
      np.testing.assert_allclose(np.asarray(e_super), np.asarray(e_child), rtol=1e-4, atol=1e-5, err_msg=name)
  for name, tap, e_child in zip(child.student_layer_names, taps, child_energies):
    assert e_child.shape == tap.shape[:-1] + (1,), name
    np.testing.assert_allclose(np.asarray(e_child), np.sum(np.square(np.asarray(tap)), -1, keepdims=True),
                               rtol=1e-5, atol=1e-6, err_msg=name)


def test_child_layers_are_physically_narrow():
  space = ss.get_space("tiny")
  child = ChildNet(space, [4, 12, 8], [3, 3, 3], SHAPE, 10, MEAN, STD)
  layers = child.weight_layers()
  assert tuple(layers["s1b0/expand"].kernel.shape) == (1, 1, 8, 24)
  assert tuple(layers["s1b0/project"].kernel.shape) == (1, 1, 24, 4)
  assert tuple(layers["s2b0/expand"].kernel.shape) == (1, 1, 4, 12)
  assert tuple(layers["s2b1/dw"].kernel.shape) == (3, 3, 36, 1)
  assert tuple(layers["classifier"].kernel.shape) == (8, 10)


def test_child_keras_round_trip_safe_mode(tmp_path):
  space = dataclasses.replace(ss.space_from_dict(EXPANSION_SPACE), student_layers="all_convs")
  child = ChildNet(space, [4, 12, 8], [1, 4, 2], SHAPE, 10, MEAN, STD)
  x = np.random.default_rng(0).random((2,) + SHAPE, dtype=np.float32)
  path = str(tmp_path / "child.keras")
  child.save(path)
  loaded = keras.models.load_model(path, safe_mode=True)
  assert isinstance(loaded, ChildNet)
  assert (loaded.space, loaded.widths, loaded.expansions) == (space, [4, 12, 8], [1, 4, 2])
  np.testing.assert_allclose(loaded(x), child(x), atol=1e-6)
  assert loaded.student_layer_names == child.student_layer_names


def test_bad_choices_are_user_errors():
  space = ss.get_space("tiny")
  choices = {"widths": {"s1b0": 8, "s2b0": 16, "s2b1": 12}}
  assert build_child_from_choices(space, choices, SHAPE, 10, MEAN, STD).widths == [8, 16, 12]
  with pytest.raises(UserInputError, match="genotype g.json.*missing \\['s2b1'\\]"):
    build_child_from_choices(space, {"widths": {"s1b0": 8, "s2b0": 16}}, SHAPE, 10, MEAN, STD,
                             source="genotype g.json")
  with pytest.raises(UserInputError, match="s2b1 width 10"):
    build_child_from_choices(space, {"widths": {**choices["widths"], "s2b1": 10}}, SHAPE, 10, MEAN, STD)
  with pytest.raises(UserInputError, match="expansions"):
    build_child_from_choices(ss.space_from_dict(EXPANSION_SPACE), {"widths": {}}, SHAPE, 10, MEAN, STD)
  with pytest.raises(UserInputError, match="input_shape"):
    ChildNet(space, [8, 16, 12], [3, 3, 3], (16, 16), 10, MEAN, STD)
  other = Supernet(ss.space_from_dict(HEAD_SPACE), SHAPE, 10, MEAN, STD)
  with pytest.raises(UserInputError, match="warm start"):
    warm_start_from_supernet(ChildNet(space, [8, 16, 12], [3, 3, 3], SHAPE, 10, MEAN, STD), other)
