"""Cost: the supernet's expected cost with one-hot weights equals the exact count of the child."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.models import cost
from rnascl_tf.nas import search_space as ss
from rnascl_tf.models.child import ChildNet
from rnascl_tf.models.supernet import Supernet

MEAN, STD = [0.5] * 3, [0.25] * 3
EXPANSION_SPACE = {"name": "exp", "stem_width": 8, "stages": [
    {"blocks": 1, "stride": 1, "max_width": 8, "width_options": [8, 4], "expansions": [1]},
    {"blocks": 2, "stride": 2, "max_width": 32, "width_options": {"count": 4, "step": 8},
     "expansions": [3, 6], "kernel": 5}]}

_SUPERNETS = {}


def _supernet(space, shape, classes):
  # Building the larger supernets dominates the run time; share them between parameter sets.
  key = (space, shape, classes)
  if key not in _SUPERNETS:
    _SUPERNETS[key] = Supernet(space, shape, classes, MEAN, STD)
  return _SUPERNETS[key]


def _pick(options, rule, k):
  return {"max": options[0], "min": options[-1], "mixed": options[k % len(options)]}[rule]


CASES = [
    ("tiny", (16, 16, 3), 10, "max"), ("tiny", (16, 16, 3), 10, "min"), ("tiny", (16, 16, 3), 10, "mixed"),
    ("s3", (32, 32, 3), 10, "max"), ("s3", (32, 32, 3), 10, "min"),
    ("exp", (16, 16, 3), 10, "mixed"), ("exp", (16, 16, 3), 10, "min"),
    ("imagenet", (32, 32, 3), 100, "mixed"), ("imagenet", (32, 32, 3), 100, "min"),
]


@pytest.mark.parametrize("name, shape, classes, rule", CASES)
def test_one_hot_expected_cost_equals_exact_child_count(name, shape, classes, rule):
  space = ss.space_from_dict(EXPANSION_SPACE) if name == "exp" else ss.get_space(name)
  supernet = _supernet(space, shape, classes)
  specs = ss.block_specs(space)
  widths = [_pick(s.width_options, rule, k) for k, s in enumerate(specs)]
  expansions = [_pick(s.expansions, rule, k) for k, s in enumerate(specs)]
  width_w = [tf.one_hot(s.width_options.index(w), len(s.width_options)) for s, w in zip(specs, widths)]
  exp_w = [tf.one_hot(s.expansions.index(e), len(s.expansions)) for s, e in zip(specs, expansions)]
  expected = supernet.expected_cost(width_w, exp_w)
  child = ChildNet(space, widths, expansions, shape, classes, MEAN, STD)
  exact = cost.count_model_cost(child, shape)
  assert float(expected["flops"]) == exact["flops"]
  assert float(expected["params"]) == exact["params"]
  assert cost.architecture_cost(space, shape, classes, widths, expansions) == exact


def _block_by_block(space, shape, classes, widths, expansions):
  """The architecture formula written out one block at a time (the test's independent reference)."""
  specs, sizes = ss.block_specs(space), ss.spatial_sizes(space, shape[0], shape[1])
  (h, w), c_in = sizes["stem"], space.stem_width
  flops = h * w * 9 * shape[2] * c_in
  params = 9 * shape[2] * c_in + 4 * c_in
  for spec, c_out, e in zip(specs, widths, expansions):
    (oh, ow), k2 = sizes[spec.name], spec.kernel ** 2
    mid = e * c_in if spec.has_expand else c_in
    if spec.has_expand:
      flops += h * w * c_in * mid
      params += c_in * mid + 4 * mid
    flops += oh * ow * k2 * mid + oh * ow * mid * c_out
    params += k2 * mid + 4 * mid + mid * c_out + 4 * c_out
    c_in, h, w = c_out, oh, ow
  if space.head_width:
    flops += h * w * c_in * space.head_width
    params += c_in * space.head_width + 4 * space.head_width
    c_in = space.head_width
  return {"flops": flops + c_in * classes, "params": params + c_in * classes + classes}


@pytest.mark.parametrize("name, shape, classes", [("exp", (16, 16, 3), 10), ("imagenet", (32, 32, 3), 100)])
def test_soft_counts_match_the_formula_block_by_block_with_gradients(name, shape, classes):
  """architecture_cost evaluates all blocks as vectors; with soft counts (floats or tensors) it gives
  the block-by-block values, and as tensors the same gradients."""
  space = ss.space_from_dict(EXPANSION_SPACE) if name == "exp" else ss.get_space(name)
  specs = ss.block_specs(space)
  rng = np.random.default_rng(3)
  widths = [float(rng.uniform(1, s.out_max)) for s in specs]
  expansions = [float(rng.uniform(1, max(s.expansions))) for s in specs]
  want = _block_by_block(space, shape, classes, widths, expansions)
  got = cost.architecture_cost(space, shape, classes, widths, expansions)
  assert isinstance(got["flops"], float) and isinstance(got["params"], float)
  for key in ("flops", "params"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
  w_t = [tf.Variable(v, dtype="float64") for v in widths]
  e_t = [tf.Variable(v, dtype="float64") for v in expansions]
  for key in ("flops", "params"):
    with tf.GradientTape(persistent=True) as tape:
      vectorised = cost.architecture_cost(space, shape, classes, w_t, e_t)[key]
      reference = _block_by_block(space, shape, classes, w_t, e_t)[key]
    assert vectorised.dtype == tf.float64
    np.testing.assert_allclose(float(vectorised), want[key], rtol=1e-12)
    for g, g_ref in zip(tape.gradient(vectorised, w_t + e_t), tape.gradient(reference, w_t + e_t)):
      np.testing.assert_allclose(0.0 if g is None else float(g), 0.0 if g_ref is None else float(g_ref),
                                 rtol=1e-10, atol=1e-9)


def test_architecture_cost_rejects_a_wrong_number_of_blocks():
  space = ss.get_space("tiny")
  with pytest.raises(ValueError, match="expected 3 widths"):
    cost.architecture_cost(space, (16, 16, 3), 10, [8, 16], [3, 3])


def test_max_mode_cost_matches_the_supernet_layers():
  space = ss.get_space("tiny")
  supernet = _supernet(space, (16, 16, 3), 10)
  width_w, exp_w = supernet.arch_weights("max")
  expected = supernet.expected_cost(width_w, exp_w)
  exact = cost.count_model_cost(supernet, (16, 16, 3))
  assert float(expected["flops"]) == exact["flops"]
  # The supernet also holds its width logits and the temperature.
  arch = sum(int(np.prod(v.shape)) for v in supernet.arch_variables()) + 1
  assert float(expected["params"]) == exact["params"] - arch


@pytest.mark.parametrize("name, millions", [
    ("s3", 0.18), ("s5", 0.33), ("s7", 0.48), ("s9", 0.63), ("s18", 1.31), ("m", 3.0), ("l", 11.8)])
def test_params_at_max_width_match_the_method_table(name, millions):
  params = cost.max_width_cost(ss.get_space(name), (32, 32, 3), 10)["params"]
  assert abs(params / 1e6 - millions) <= 0.1 * millions


def test_count_model_cost_reads_real_layer_shapes():
  model = keras.Sequential([
      keras.Input((8, 8, 3)),
      keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False),
      keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2),
      keras.layers.Dense(5),
  ])
  result = cost.count_model_cost(model, (8, 8, 3))
  # conv 4x4 out x 9 x 3 x 4, depthwise 2x2 out x 9 x 4 x 2, dense on 2x2 positions x 8 x 5.
  assert result == {"flops": 16 * 9 * 12 + 4 * 9 * 8 + 4 * 40, "params": model.count_params()}
  # The recording wrappers are removed again.
  assert all("call" not in layer.__dict__ for layer in model.layers)
