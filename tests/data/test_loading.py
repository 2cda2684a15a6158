"""Tests for rnascl_tf.data.loading: the digits loader and input errors of every loader."""

import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.configs import DataConfig
from rnascl_tf.data import SPLITS, load_splits
from rnascl_tf.data.images import normalization_constants
from rnascl_tf.data.splits import SPLIT_CODES, assign_splits, hash_order
from rnascl_tf.errors import UserInputError


def _row_hashes(x):
  return [row.tobytes() for row in np.ascontiguousarray(x)]


# ------------------------------------------------------------------------------------------------
# digits.


def test_digits_info_shapes_and_ranges(digits):
  info = digits.info
  assert info.input_shape == (16, 16, 1) and info.num_classes == 10 and len(info.class_names) == 10
  assert sum(info.split_sizes.values()) == 1797
  assert info.split_sizes == {"weight": 1006, "arch": 288, "val": 144, "test": 359}
  for split in SPLITS:
    x, y = digits.numpy(split)
    n = (info.split_sizes["weight"] + info.split_sizes["arch"] if split == "train_full"
         else info.split_sizes[split])
    assert x.shape == (n, 16, 16, 1) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert set(np.unique(y)) == set(range(10))
  x_full, _ = digits.numpy("train_full")
  mean, std = normalization_constants(x_full)
  np.testing.assert_allclose(info.mean, mean)
  np.testing.assert_allclose(info.std, std)


def test_digits_splits_disjoint_and_cover_dataset(digits):
  hashes = {split: _row_hashes(digits.numpy(split)[0]) for split in SPLITS}
  all_hashes = [h for s in ("weight", "arch", "val", "test") for h in hashes[s]]
  assert len(set(all_hashes)) == len(all_hashes) == 1797  # Pairwise disjoint, nothing lost.
  assert set(hashes["train_full"]) == set(hashes["weight"]) | set(hashes["arch"])


def test_digits_matches_sklearn_and_split_codes(digits):
  from sklearn.datasets import load_digits

  raw = load_digits()
  codes = assign_splits(1797, 0, 0.1, 0.2, 0.2)
  order = hash_order(1797, 0, 0)  # Members come in the seeded hash order, not sklearn's.
  for split in ("weight", "test"):
    x, y = digits.numpy(split)
    idx = order[codes[order] == SPLIT_CODES[split]]
    np.testing.assert_array_equal(y, raw.target[idx])
    expected = tf.image.resize(raw.images[idx][..., None] / 16.0, [16, 16]).numpy()
    np.testing.assert_allclose(x, expected, atol=1e-6)
    # Corners of the bilinear upsample repeat the 8x8 corners exactly.
    np.testing.assert_allclose(x[:, 0, 0, 0], raw.images[idx, 0, 0] / 16.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("kwargs, flag", [
    ({"dataset": "mnist"}, "--dataset"),
    ({"dataset": "image_folder:"}, "--dataset"),
    ({"val_fraction": 0.5, "arch_fraction": 0.5}, "--arch_fraction"),
    ({"val_fraction": -0.1}, "--val_fraction"),
    ({"test_fraction": 1.0}, "--test_fraction"),
    ({"batch_size": 0}, "--batch_size"),
    ({"image_size": 2}, "--image_size"),
    ({"max_train_examples": 0}, "--max_train_examples"),
])
def test_bad_config_names_the_flag(kwargs, flag):
  with pytest.raises(UserInputError, match=flag):
    load_splits(DataConfig(**kwargs))


def test_unknown_dataset_lists_choices():
  with pytest.raises(UserInputError, match="valid choices: digits, cifar10, cifar100"):
    DataConfig(dataset="imagenet")


def test_too_few_examples_for_weight_split():
  with pytest.raises(UserInputError, match="--max_train_examples"):
    load_splits(DataConfig(dataset="digits", max_train_examples=2))
