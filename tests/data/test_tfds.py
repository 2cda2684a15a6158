"""Tests for TFDS datasets (rnascl_tf.data.tfds and its loader), mocked: nothing downloads."""

import os
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.configs import DataConfig
from rnascl_tf.data import SPLITS, load_splits
from rnascl_tf.data.tfds import (CIFAR100_MEAN, CIFAR10_MEAN, IMAGENET100_CLASSES, IMAGENET_MEAN,
                                 remap_imagenet100_labels)
from rnascl_tf.errors import UserInputError

TRAIN_SPLITS = ("weight", "arch", "val")


def _row_hashes(x):
  return [row.tobytes() for row in np.ascontiguousarray(x)]


def _first(ds):
  return next(iter(ds))


@pytest.mark.parametrize("name, shape, classes, mean", [
    ("cifar10", (32, 32, 3), 10, CIFAR10_MEAN),
    ("cifar100", (32, 32, 3), 100, CIFAR100_MEAN),
    ("imagenette/160px", (64, 64, 3), 10, IMAGENET_MEAN),
])
def test_tfds_mocked(tmp_path, name, shape, classes, mean):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=40):
    splits = load_splits(DataConfig(dataset=name, data_dir=str(tmp_path), batch_size=8))
    info = splits.info
    assert info.input_shape == shape and info.num_classes == classes == len(info.class_names)
    assert info.mean == mean
    assert info.split_sizes == {"weight": 28, "arch": 8, "val": 4, "test": 40}
    hashes = {}
    for split in SPLITS:
      x, y = splits.numpy(split)
      assert x.shape[1:] == shape and x.dtype == np.uint8 and y.dtype == np.int32
      assert 0 <= y.min() and y.max() < classes
      hashes[split] = _row_hashes(x)
    train = [h for s in TRAIN_SPLITS for h in hashes[s]]
    assert len(set(train)) == len(train) == 40  # Disjoint, and together the whole train split.
    assert set(hashes["train_full"]) == set(hashes["weight"]) | set(hashes["arch"])
    x_eval, y_eval = _first(splits.dataset("test", training=False))
    np.testing.assert_allclose(x_eval.numpy(), splits.numpy("test")[0][:8] / 255.0, atol=1e-6)
    xb, yb = _first(splits.dataset("weight", training=True))
    assert xb.shape == (8,) + shape and xb.dtype == tf.float32 and yb.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(xb)) and float(tf.reduce_max(xb)) <= 1.0
    (sw, _), (sa, _) = _first(splits.search_dataset())
    assert sw.shape == sa.shape == (8,) + shape


def test_remap_imagenet100_labels_on_synthetic_labels():
  labels = np.arange(1000)
  out = remap_imagenet100_labels(labels).numpy()
  kept = np.flatnonzero(out >= 0)
  np.testing.assert_array_equal(kept, IMAGENET100_CLASSES)
  np.testing.assert_array_equal(out[kept], np.arange(100))
  assert (out[out < 0] == -1).all() and (out < 0).sum() == 900


def test_imagenet100_mocked_filters_and_remaps(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=300):
    splits = load_splits(DataConfig(dataset="imagenet100", data_dir=str(tmp_path), batch_size=4, image_size=32))
    raw = tfds.load("imagenet2012", split="validation", data_dir=str(tmp_path), download=False,
                    as_supervised=True, shuffle_files=False,
                    decoders={"image": tfds.decode.SkipDecoding()})
    raw_labels = np.array([int(y) for _, y in raw])
    x, y = splits.numpy("test")
  wanted = [IMAGENET100_CLASSES.index(l) for l in raw_labels if l in IMAGENET100_CLASSES]
  assert len(wanted) > 0
  np.testing.assert_array_equal(y, wanted)  # Only the 100 classes pass, relabelled, in order.
  assert x.shape == (len(wanted), 32, 32, 3)
  assert splits.info.num_classes == 100 and splits.info.input_shape == (32, 32, 3)
  assert splits.info.split_sizes["test"] == 30  # Estimate: 10% of the raw split.


def test_missing_tfds_dataset_fails_fast_without_network(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("the data module tried to reach the network")

  monkeypatch.setattr(socket, "create_connection", no_network)
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket, "getaddrinfo", no_network)
  start = time.monotonic()
  with pytest.raises(UserInputError) as err:
    load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
  assert time.monotonic() - start < 20
  msg = str(err.value)
  assert "--data_dir" in msg and "--download" in msg
  assert os.path.join(str(tmp_path), "downloads", "manual") in msg
  assert os.path.join(str(tmp_path), "cifar10", "3.0.2") in msg


def test_unknown_imagenette_variant(tmp_path):
  with pytest.raises(UserInputError, match="--dataset.*160px"):
    load_splits(DataConfig(dataset="imagenette/99px", data_dir=str(tmp_path)))
