"""Tests for rnascl_tf.data.image_folder and its loader: listing, decoding, the cache and errors."""

import dataclasses
import os
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from conftest import SHARED_DATA
import helpers
from rnascl_tf.configs import DataConfig
from rnascl_tf.data import SPLITS, image_folder, load_splits
from rnascl_tf.data.tfds import CIFAR10_MEAN, CIFAR10_NAMES, CIFAR10_STD
from rnascl_tf.errors import UserInputError

CIFAR_TARBALL = os.path.join(SHARED_DATA, "cifar10-jpeg.tar.gz")
TRAIN_SPLITS = ("weight", "arch", "val")


def _row_hashes(x):
  return [row.tobytes() for row in np.ascontiguousarray(x)]


def _first(ds):
  return next(iter(ds))


_write_images = helpers.write_image_folder


def test_image_folder_with_test_dir_and_cache_reuse(tmp_path, monkeypatch):
  root = str(tmp_path / "imgs")
  train = _write_images(root, "train", per_class=10)
  test = _write_images(root, "test", per_class=2)
  cfg = DataConfig(dataset=f"image_folder:{root}", cache_dir=str(tmp_path / "cache"),
                   batch_size=4, max_test_examples=5)
  splits = load_splits(cfg)
  info = splits.info
  assert info.class_names == ("cat", "dog", "emu") and info.num_classes == 3
  assert info.input_shape == (5, 6, 3)
  assert info.split_sizes == {"weight": 21, "arch": 6, "val": 3, "test": 5}
  by_bytes = {img.tobytes(): ("cat", "dog", "emu").index(cls) for img, cls in train.values()}
  for split in TRAIN_SPLITS:
    x, y = splits.numpy(split)
    assert x.dtype == np.uint8
    assert [by_bytes[h] for h in _row_hashes(x)] == list(y)  # Lossless PNG: exact pixels and labels.
  test_bytes = {img.tobytes() for img, _ in test.values()}
  assert set(_row_hashes(splits.numpy("test")[0])) <= test_bytes
  assert len(os.listdir(tmp_path / "cache")) == 1

  def no_decoding(paths):
    raise AssertionError("decoded again although the cache is valid")

  monkeypatch.setattr(image_folder, "_decode_files", no_decoding)
  again = load_splits(cfg)
  for split in SPLITS:
    np.testing.assert_array_equal(again.numpy(split)[0], splits.numpy(split)[0])
  # A changed file invalidates the cache key, so it is decoded again.
  path = next(iter(train))
  os.utime(path, ns=(1, 1))
  with pytest.raises(AssertionError, match="decoded again"):
    load_splits(cfg)


def test_image_folder_splits_come_in_seeded_order_not_class_order(tmp_path):
  # Folders are read class by class; "the first N test / validation images" (evaluation's
  # --num_examples, the per-epoch --val_examples) must still be a random subset, and exactly the
  # subset that --max_test_examples=N keeps.
  root = str(tmp_path / "imgs")
  _write_images(root, "train", per_class=20)
  _write_images(root, "test", per_class=8)
  cfg = DataConfig(dataset=f"image_folder:{root}", cache_dir=str(tmp_path / "cache"), batch_size=4)
  splits = load_splits(cfg)
  for split in ("test", "val", "weight"):
    x, y = splits.numpy(split)
    assert np.any(np.diff(y) < 0), f"{split} is in class order: {y}"
    assert len(set(y[:6])) >= 2, split
    batches = list(splits.dataset(split, training=False).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)  # Pipeline = numpy order.
  x, y = splits.numpy("test")
  capped = load_splits(dataclasses.replace(cfg, max_test_examples=7))
  xc, yc = capped.numpy("test")
  np.testing.assert_array_equal(xc, x[:7])
  np.testing.assert_array_equal(yc, y[:7])
  other = load_splits(dataclasses.replace(cfg, seed=1)).numpy("test")[1]
  assert sorted(other) == sorted(y) and list(other) != list(y)  # Same members (whole split), other order.


def test_image_folder_without_test_dir_carves_test(tmp_path):
  root = str(tmp_path / "imgs")
  _write_images(root, "train", per_class=10, fmt="jpg", classes=("a", "b"))
  splits = load_splits(DataConfig(dataset=f"image_folder:{root}", image_size=8,
                                  cache_dir=str(tmp_path / "cache"), batch_size=4))
  assert splits.info.split_sizes == {"weight": 11, "arch": 3, "val": 2, "test": 4}
  assert splits.info.input_shape == (8, 8, 3)
  hashes = [h for s in ("weight", "arch", "val", "test") for h in _row_hashes(splits.numpy(s)[0])]
  assert len(set(hashes)) == 20
  xb, _ = _first(splits.dataset("weight", training=True))
  assert xb.shape == (4, 8, 8, 3)
  # A damaged cache file is rebuilt, not fatal.
  (cache_file,) = list((tmp_path / "cache").iterdir())
  cache_file.write_bytes(b"not a zip")
  again = load_splits(splits.config)
  np.testing.assert_array_equal(again.numpy("test")[0], splits.numpy("test")[0])


def test_image_folder_mismatched_sizes_name_the_file(tmp_path):
  root = str(tmp_path / "imgs")
  _write_images(root, "train", per_class=2, classes=("a", "b"))
  odd = os.path.join(root, "train", "b", "zzz.png")
  tf.io.write_file(odd, tf.io.encode_png(np.zeros((7, 6, 3), np.uint8)))
  with pytest.raises(UserInputError, match="zzz.png.*share one size"):
    load_splits(DataConfig(dataset=f"image_folder:{root}", cache_dir=str(tmp_path / "c")))


@pytest.fixture(scope="session")
def cifar_jpeg_root(tmp_path_factory):
  """The real CIFAR-10 JPEG folder, extracted once per session (to RAM when /dev/shm allows)."""
  if not os.path.isfile(CIFAR_TARBALL):
    pytest.skip(f"{CIFAR_TARBALL} is absent (shared data is not part of a fresh clone)")
  # 60,000 small files: tmpfs takes ~2 s, a busy disk took ~50 s (all kernel time).
  shm = "/dev/shm"
  if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > (1 << 30):
    root = tempfile.mkdtemp(prefix="rnascl-cifar10-jpeg-", dir=shm)
  else:
    root = str(tmp_path_factory.mktemp("cifar10-jpeg"))
  try:
    if shutil.which("tar"):  # Much faster than tarfile for many small files.
      subprocess.run(["tar", "-xzf", CIFAR_TARBALL, "-C", root], check=True)
    else:
      with tarfile.open(CIFAR_TARBALL) as tar:
        tar.extractall(root, filter="data")
    yield root
  finally:
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_real_cifar10_jpeg_folder(cifar_jpeg_root):
  # The ~180 MB decoded cache goes beside the extracted files (RAM when possible), removed after.
  cfg = DataConfig(dataset=f"image_folder:{cifar_jpeg_root}/",
                   cache_dir=os.path.join(cifar_jpeg_root, ".cache"), batch_size=256)
  splits = load_splits(cfg)
  info = splits.info
  assert info.input_shape == (32, 32, 3) and info.num_classes == 10
  assert info.class_names == CIFAR10_NAMES
  sizes = info.split_sizes
  assert sizes["weight"] + sizes["arch"] + sizes["val"] == 50_000 and sizes["test"] == 10_000
  assert sizes == {"weight": 35_000, "arch": 10_000, "val": 5_000, "test": 10_000}
  np.testing.assert_allclose(info.mean, CIFAR10_MEAN, atol=0.01)  # JPEG differs slightly.
  np.testing.assert_allclose(info.std, CIFAR10_STD, atol=0.01)
  _, y_test = splits.numpy("test")
  assert np.bincount(y_test).tolist() == [1000] * 10
  xb, yb = _first(splits.dataset("train_full", training=True))
  assert xb.shape == (256, 32, 32, 3) and yb.dtype == tf.int32


def test_image_folder_errors(tmp_path):
  with pytest.raises(UserInputError, match="--dataset=image_folder:.*no such directory"):
    load_splits(DataConfig(dataset=f"image_folder:{tmp_path / 'nope'}"))
  os.makedirs(tmp_path / "empty" / "train" / "a")
  with pytest.raises(UserInputError, match="--dataset=image_folder:.*holds no images"):
    load_splits(DataConfig(dataset=f"image_folder:{tmp_path / 'empty'}", cache_dir=str(tmp_path)))
  os.makedirs(tmp_path / "flat")
  with pytest.raises(UserInputError, match="no train/ folder"):
    load_splits(DataConfig(dataset=f"image_folder:{tmp_path / 'flat'}"))
