"""Tests for rnascl_tf.data.pipelines: determinism, shuffling, augmentation and the search pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.configs import DataConfig
from rnascl_tf.data import load_splits
from rnascl_tf.data.pipelines import augment_batch, augment_fn
from rnascl_tf.errors import UserInputError


def _row_hashes(x):
  return [row.tobytes() for row in np.ascontiguousarray(x)]


def _first(ds):
  return next(iter(ds))


def test_digits_determinism_and_seed_dependence(digits):
  again = load_splits(DataConfig(dataset="digits", batch_size=32, seed=0))
  bigger_batch = load_splits(DataConfig(dataset="digits", batch_size=100, seed=0))
  other = load_splits(DataConfig(dataset="digits", batch_size=32, seed=1))
  for split in ("weight", "arch", "val", "test"):
    np.testing.assert_array_equal(digits.numpy(split)[0], again.numpy(split)[0])
    np.testing.assert_array_equal(digits.numpy(split)[0], bigger_batch.numpy(split)[0])
    assert set(_row_hashes(digits.numpy(split)[0])) != set(_row_hashes(other.numpy(split)[0]))
  xa, ya = _first(digits.dataset("weight", training=True))
  xb, yb = _first(again.dataset("weight", training=True))
  np.testing.assert_array_equal(xa.numpy(), xb.numpy())  # Shuffle and augmentation replay.
  np.testing.assert_array_equal(ya.numpy(), yb.numpy())
  (w1, _), (a1, _) = _first(digits.search_dataset())
  (w2, _), (a2, _) = _first(again.search_dataset())
  np.testing.assert_array_equal(w1.numpy(), w2.numpy())
  np.testing.assert_array_equal(a1.numpy(), a2.numpy())
  xc, _ = _first(other.dataset("weight", training=True))
  assert not np.array_equal(xa.numpy(), xc.numpy())


def test_digits_eval_pipeline_is_numpy_in_order(digits):
  x, y = digits.numpy("test")
  batches = list(digits.dataset("test", training=False).as_numpy_iterator())
  assert [len(b[1]) for b in batches] == [32] * 11 + [7]  # 359 = 11 * 32 + 7, remainder kept.
  np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
  assert digits.steps_per_epoch("test") == 11 and digits.steps_per_epoch("train_full") == 1294 // 32


def test_training_pipeline_shuffles_augments_and_differs_per_epoch(digits):
  ds = digits.dataset("weight", training=True)
  assert ds.element_spec[0].shape.as_list() == [32, 16, 16, 1]
  assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int32
  steps = digits.steps_per_epoch("weight")
  batches = list(ds.take(steps + 1).as_numpy_iterator())  # Repeats by default when training.
  x0, y0 = batches[0]
  assert x0.min() >= 0.0 and x0.max() <= 1.0
  train_x, train_y = digits.numpy("weight")
  assert not np.array_equal(y0, train_y[:32])  # Shuffled.
  originals = set(_row_hashes(train_x))
  # With padding 2, a random crop almost never returns the image unshifted for a whole batch.
  assert sum(h in originals for h in _row_hashes(x0)) < 32
  assert not np.array_equal(batches[steps][0], x0)  # Next epoch: other order and crops.


def test_no_augment_training_yields_original_images():
  splits = load_splits(DataConfig(dataset="digits", batch_size=64, augment=False))
  x, _ = _first(splits.dataset("arch", training=True))
  assert set(_row_hashes(x.numpy())) <= set(_row_hashes(splits.numpy("arch")[0]))


@pytest.mark.parametrize("flip", [False, True])
def test_augment_fn_is_a_padded_crop_and_maybe_flip(flip):
  image = tf.constant(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
  fn = augment_fn(size=8, channels=3, pad=1, flip=flip, salt=5)
  padded = np.pad(image.numpy().astype(np.float32) / 255.0, [(1, 1), (1, 1), (0, 0)])
  candidates = [padded[dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
  if flip:
    candidates += [c[:, ::-1] for c in candidates]
  seen = set()
  for r in range(40):
    out, label = fn((image, tf.constant(7)), tf.constant(r, tf.int64))
    assert int(label) == 7
    matches = [i for i, c in enumerate(candidates) if np.array_equal(out.numpy(), c)]
    assert matches, "augmented image is not a padded crop (or its mirror)"
    seen.add(matches[0])
    again, _ = fn((image, tf.constant(7)), tf.constant(r, tf.int64))
    np.testing.assert_array_equal(out.numpy(), again.numpy())
  assert len(seen) > 5  # Per-element seeds give different crops.
  if flip:
    assert any(i >= 9 for i in seen) and any(i < 9 for i in seen)


def _crop_counts(out, candidates):
  counts = np.zeros(len(candidates), int)
  for image in out:
    matches = [i for i, c in enumerate(candidates) if np.array_equal(image, c)]
    assert matches, "augmented image is not a padded crop (or its mirror)"
    counts[matches[0]] += 1
  return counts


@pytest.mark.parametrize("flip", [False, True])
def test_augment_batch_draws_padded_crops_uniformly(flip):
  image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
  n = 1800
  r = tf.constant(np.random.default_rng(0).integers(0, 2 ** 32, n), tf.int64)
  out, labels = augment_batch(tf.constant(np.repeat(image[None], n, 0)), tf.range(n), r, size=8, pad=1, flip=flip)
  assert out.dtype == tf.float32 and out.shape == (n, 8, 8, 3)
  np.testing.assert_array_equal(labels.numpy(), np.arange(n))
  padded = np.pad(image.astype(np.float32) / 255.0, [(1, 1), (1, 1), (0, 0)])
  candidates = [padded[dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
  if flip:
    candidates += [c[:, ::-1] for c in candidates]
  counts = _crop_counts(out.numpy(), candidates)
  # Uniform over the 9 (18 with flips) outcomes, as augment_fn: each count within 5 sigma of n / k.
  expected = n / len(candidates)
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
  again, _ = augment_batch(tf.constant(np.repeat(image[None], n, 0)), tf.range(n), r, size=8, pad=1, flip=flip)
  np.testing.assert_array_equal(out.numpy(), again.numpy())  # Determined by the draws.


def test_augment_batch_crops_a_larger_image_without_padding():
  image = np.arange(10 * 10, dtype=np.uint8).reshape(10, 10, 1)
  r = tf.constant(np.arange(50), tf.int64)  # 50 consecutive draws cover all 3 x 3 offsets, both flips.
  out, _ = augment_batch(tf.constant(np.repeat(image[None], 50, 0)), tf.zeros(50), r, size=8, pad=0, flip=True)
  candidates = [image[dy:dy + 8, dx:dx + 8] / np.float32(255.0) for dy in range(3) for dx in range(3)]
  candidates += [c[:, ::-1] for c in candidates]
  assert np.all(_crop_counts(out.numpy(), candidates) > 0)


def _digits(per_image, **kwargs):
  splits = load_splits(DataConfig(dataset="digits", batch_size=16, seed=3, **kwargs))
  splits.augment_per_image = per_image
  return splits


@pytest.mark.parametrize("per_image", [False, True])
def test_skip_batches_resumes_exactly(per_image):
  splits = _digits(per_image)
  steps = splits.steps_per_epoch("train_full")
  k = steps + 2  # Resume in the second epoch: the reshuffled order and the fresh crops must match.
  full = list(splits.dataset("train_full", training=True).take(k + 3).as_numpy_iterator())
  resumed = list(splits.dataset("train_full", training=True, skip_batches=k).take(3).as_numpy_iterator())
  for (x, y), (xr, yr) in zip(full[k:], resumed):
    np.testing.assert_array_equal(x, xr)
    np.testing.assert_array_equal(y, yr)
  for rotating in (False, True):
    whole = list(splits.search_dataset(rotating=rotating).take(k + 2).as_numpy_iterator())
    later = list(splits.search_dataset(rotating=rotating, skip_batches=k).take(2).as_numpy_iterator())
    for a, b in zip(whole[k:], later):
      for u, v in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_array_equal(u, v)


def test_whole_batch_pipeline_matches_the_per_image_one():
  batched, per_image = _digits(False), _digits(True)
  for training in (False, True):
    a = list(batched.dataset("weight", training=training, repeat=False).as_numpy_iterator())
    b = list(per_image.dataset("weight", training=training, repeat=False).as_numpy_iterator())
    assert [len(y) for _, y in a] == [len(y) for _, y in b]
    for (xa, ya), (xb, yb) in zip(a, b):
      np.testing.assert_array_equal(ya, yb)  # The same shuffle.
      if not training:
        np.testing.assert_array_equal(xa, xb)  # Without augmentation the same images.
  spec = batched.dataset("weight", training=True).element_spec
  assert spec == per_image.dataset("weight", training=True).element_spec


def test_search_dataset_structure(digits):
  ds = digits.search_dataset()
  (xw, yw), (xa, ya) = ds.element_spec
  assert xw.shape.as_list() == xa.shape.as_list() == [32, 16, 16, 1]
  assert yw.dtype == ya.dtype == tf.int32
  (bw, lw), (ba, la) = _first(ds)
  assert bw.shape == (32, 16, 16, 1) and la.shape == (32,)


def test_rotating_search_partitions_train_full_each_epoch():
  splits = load_splits(DataConfig(dataset="digits", batch_size=64, augment=False, seed=2))
  steps = splits.steps_per_epoch("weight")
  full = set(_row_hashes(splits.numpy("train_full")[0]))
  epochs = []
  for batch in splits.search_dataset(rotating=True).take(2 * steps).batch(steps).as_numpy_iterator():
    (xw, _), (xa, _) = batch
    w = set(_row_hashes(xw.reshape(-1, 16, 16, 1)))
    a = set(_row_hashes(xa.reshape(-1, 16, 16, 1)))
    assert not (w & a)  # Within an epoch the two sides never share an example.
    assert w | a <= full
    assert len(a) == splits.info.split_sizes["arch"]  # The arch share is used whole.
    epochs.append(a)
  assert epochs[0] != epochs[1]  # The partition rotates across epochs.


def test_pipeline_under_mirrored_strategy(digits):
  strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
  dist = strategy.experimental_distribute_dataset(digits.search_dataset())
  (xw, yw), (xa, ya) = next(iter(dist))
  shapes = [t.shape for t in strategy.experimental_local_results(xw)]
  assert shapes == [(16, 16, 16, 1), (16, 16, 16, 1)]  # Global batch 32 split over 2 replicas.


def test_unknown_split_name(digits):
  with pytest.raises(UserInputError, match="train_full"):
    digits.dataset("training", training=True)
