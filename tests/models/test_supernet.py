"""Supernet: masks, modes, arch/weight split, Gumbel reproducibility, gradients, distribution."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.models import blocks
from rnascl_tf.nas import search_space as ss
from rnascl_tf.models.supernet import ARCH_MARKERS, Supernet

SHAPE = (16, 16, 3)
MEAN, STD = [0.5] * 3, [0.25] * 3


def _net(space=None, seed=0):
  return Supernet(space or ss.get_space("tiny"), SHAPE, 10, MEAN, STD, seed=seed)


def _images(n=2):
  return np.random.default_rng(0).random((n,) + SHAPE, dtype=np.float32)


def test_mask_values_for_one_hot_and_soft_weights():
  matrix = blocks.mask_matrix((4, 2, 1), 4)
  one_hot = blocks.width_mask(tf.constant([0.0, 1.0, 0.0]), matrix)
  np.testing.assert_allclose(one_hot, [1, 1, 0, 0])
  soft = blocks.width_mask(tf.constant([0.5, 0.25, 0.25]), matrix)
  np.testing.assert_allclose(soft, [1, 0.75, 0.5, 0.5])
  # mid mask: input widths (4, 2) x expansions (2, 1) -> widths e*c = 8, 4, 4, 2 out of 8.
  mid_matrix = blocks.mid_mask_matrix((4, 2), (2, 1), 8)
  mid = blocks.mid_mask(tf.constant([0.5, 0.5]), tf.constant([1.0, 0.0]), mid_matrix)
  np.testing.assert_allclose(mid, [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5])
  mid = blocks.mid_mask(tf.constant([0.0, 1.0]), tf.constant([0.0, 1.0]), mid_matrix)
  np.testing.assert_allclose(mid, [1, 1, 0, 0, 0, 0, 0, 0])


def test_forward_modes_shapes_and_masks():
  net = _net()
  net.width_logits[1].assign([0.0, 0.0, 3.0])  # s2b0 argmax -> 8 of 16 channels
  x = _images()
  out = net.forward(x, mode="argmax")
  assert tuple(out["logits"].shape) == (2, 10)
  assert [t.shape[-1] for t in out["taps"]] == [8, 24, 24, 8, 24, 24, 16, 48, 48, 16]
  project = out["taps"][net.student_layer_names.index("s2b0/project")].numpy()
  assert np.all(project[..., 8:] == 0) and np.any(project[..., :8] != 0)
  np.testing.assert_allclose(out["width_weights"][1], [0, 0, 1])
  # "max" = all-ones masks = first option everywhere.
  masks = net.masks(*net.arch_weights("max"))
  assert all(np.all(np.asarray(m) == 1) for pair in masks for m in pair)
  soft = net.forward(x, mode="softmax")["width_weights"]
  np.testing.assert_allclose(soft[2], [1 / 3] * 3, rtol=1e-6)
  # call(): argmax when not training, a Gumbel sample when training.
  np.testing.assert_allclose(net(x), out["logits"], atol=1e-6)
  with pytest.raises(ValueError, match="mode"):
    net.forward(x, mode="hard")


def test_arch_and_weight_variables_split_by_path():
  space = ss.space_from_dict({"name": "exp", "stem_width": 8, "stages": [
      {"blocks": 2, "stride": 1, "max_width": 8, "width_options": [8, 4], "expansions": [2, 4]}]})
  net = _net(space)
  arch, weights = net.arch_variables(), net.weight_variables()
  assert len(arch) == 2 + 2  # width logits + expansion logits of both blocks
  assert all(any(m in v.path for m in ARCH_MARKERS) for v in arch)
  ids = lambda vs: {id(v) for v in vs}  # noqa: E731
  assert ids(arch) | ids(weights) == ids(net.trainable_variables)
  assert not ids(arch) & ids(weights)
  assert id(net.temperature) not in ids(net.trainable_variables)
  net.set_temperature(0.5)
  assert float(net.temperature.numpy()) == 0.5


def test_gumbel_samples_are_reproducible_per_seed():
  x = _images()
  draws = []
  for seed in (3, 3, 4):
    net = _net(seed=seed)
    first = net.forward(x, training=True, mode="gumbel")["width_weights"]
    second = net.forward(x, training=True, mode="gumbel")["width_weights"]
    draws.append((np.concatenate(first), np.concatenate(second)))
  np.testing.assert_array_equal(draws[0][0], draws[1][0])
  np.testing.assert_array_equal(draws[0][1], draws[1][1])
  assert not np.allclose(draws[0][0], draws[0][1])  # the generator advances
  assert not np.allclose(draws[0][0], draws[2][0])  # another seed, another sample


def test_expected_flops_gradient_pushes_towards_narrower_widths():
  net = _net()
  with tf.GradientTape() as tape:
    weights, _ = net.arch_weights("softmax")
    flops = net.expected_cost(weights)["flops"]
  grads = tape.gradient(flops, net.width_logits)
  for g in grads:
    g = g.numpy()
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    # Raising the widest option's logit raises the cost, raising the narrowest lowers it.
    assert g[0] > 0 > g[-1]


def test_derive_takes_the_argmax_and_reports_probabilities():
  net = _net()
  net.width_logits[0].assign([0.0, 1.0])
  genotype = net.derive()
  assert genotype["widths"] == {"s1b0": 4, "s2b0": 16, "s2b1": 16}
  assert genotype["expansions"] == {"s1b0": 3, "s2b0": 3, "s2b1": 3}
  np.testing.assert_allclose(genotype["width_probs"]["s1b0"], [1 / (1 + np.e), np.e / (1 + np.e)])


def test_forward_in_tf_function_and_under_mirrored_strategy():
  devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
  if len(devices) < 2:
    pytest.skip("needs two logical CPU devices (tests/conftest.py)")
  strategy = tf.distribute.MirroredStrategy(devices)
  with strategy.scope():
    net = _net()

  @tf.function
  def step(x):
    def replica_fn(x):
      out = net.forward(x, training=True, mode="gumbel")
      return out["logits"], net.expected_cost(out["width_weights"])["flops"], out["width_weights"][1]
    return strategy.run(replica_fn, args=(x,))

  logits, flops, sample = step(tf.constant(_images()))
  per_replica = strategy.experimental_local_results(logits)
  assert len(per_replica) == 2
  assert all(tuple(t.shape) == (2, 10) and np.all(np.isfinite(t)) for t in per_replica)
  assert all(float(f) > 0 for f in strategy.experimental_local_results(flops))
  # The mirrored seed state gives both replicas the same architecture sample.
  first, second = strategy.experimental_local_results(sample)
  np.testing.assert_array_equal(first, second)


def test_supernet_keras_round_trip(tmp_path):
  net = _net(dataclasses.replace(ss.get_space("tiny"), student_layers="block_outputs"))
  net.width_logits[2].assign([0.0, 2.0, 1.0])
  path = str(tmp_path / "supernet.keras")
  net.save(path)
  loaded = keras.models.load_model(path, safe_mode=True)
  assert isinstance(loaded, Supernet) and loaded.space == net.space
  assert loaded.student_layer_names == ["s1b0/out", "s2b0/out", "s2b1/out"]
  x = _images()
  np.testing.assert_allclose(loaded(x), net(x), atol=1e-6)
  assert loaded.derive() == net.derive()
