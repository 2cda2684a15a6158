"""Tests for rnascl_tf.data.datasets: splits, pipelines, TFDS (mocked), image folders and input errors."""

import dataclasses
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import SHARED_DATA
import helpers
from rnascl_tf.data import datasets as data
from rnascl_tf.errors import UserInputError

CIFAR_TARBALL = os.path.join(SHARED_DATA, "cifar10-jpeg.tar.gz")
TRAIN_SPLITS = ("weight", "arch", "val")


def _row_hashes(x):
  return [row.tobytes() for row in np.ascontiguousarray(x)]


def _first(ds):
  return next(iter(ds))


@pytest.fixture(scope="module")
def digits():
  return data.load_splits(data.DataConfig(dataset="digits", batch_size=32, seed=0))


# ------------------------------------------------------------------------------------------------
# Split assignment.


@pytest.mark.parametrize("n, val, arch, test, max_train, max_test, expected", [
    (1000, 0.1, 0.2, 0.0, None, None, {"weight": 700, "arch": 200, "val": 100, "test": 0}),
    (1000, 0.1, 0.2, 0.2, None, None, {"weight": 560, "arch": 160, "val": 80, "test": 200}),
    (1000, 0.1, 0.2, 0.2, 100, 30, {"weight": 70, "arch": 20, "val": 10, "test": 30}),
    (10, 0.01, 0.01, 0.0, None, None, {"weight": 8, "arch": 1, "val": 1, "test": 0}),
    (50, 0.0, 0.0, 1.0, None, 7, {"weight": 0, "arch": 0, "val": 0, "test": 7}),
])
def test_assign_splits_sizes_disjoint_deterministic(n, val, arch, test, max_train, max_test, expected):
  codes = data.assign_splits(n, 3, val, arch, test, max_train, max_test)
  assert codes.dtype == np.int8 and codes.shape == (n,)
  sizes = {s: int((codes == c).sum()) for s, c in data._CODES.items()}
  assert sizes == expected
  assert int((codes == -1).sum()) == n - sum(expected.values())  # One code per index: disjoint.
  np.testing.assert_array_equal(codes, data.assign_splits(n, 3, val, arch, test, max_train, max_test))
  other = data.assign_splits(n, 4, val, arch, test, max_train, max_test)
  assert not np.array_equal(codes, other)


def test_assign_splits_cap_is_subset_of_full_split():
  full = data.assign_splits(1000, 1, 0.1, 0.2)
  capped = data.assign_splits(1000, 1, 0.1, 0.2, max_train=100)
  used = capped >= 0
  # A capped run uses a subset of the same members, each in the same split.
  np.testing.assert_array_equal(capped[used], full[used])


def test_normalization_constants_uint8_and_float():
  x = np.zeros((2, 2, 2, 2), np.uint8)
  x[..., 0] = 255
  x[0, ..., 1] = 255  # Channel 1: half the pixels 1.0, half 0.0.
  mean, std = data.normalization_constants(x)
  np.testing.assert_allclose(mean, (1.0, 0.5))
  np.testing.assert_allclose(std, (0.0, 0.5))
  mean_f, std_f = data.normalization_constants(x.astype(np.float32) / 255.0)
  np.testing.assert_allclose(mean_f, mean)
  np.testing.assert_allclose(std_f, std)


# ------------------------------------------------------------------------------------------------
# digits.


def test_digits_info_shapes_and_ranges(digits):
  info = digits.info
  assert info.input_shape == (16, 16, 1) and info.num_classes == 10 and len(info.class_names) == 10
  assert sum(info.split_sizes.values()) == 1797
  assert info.split_sizes == {"weight": 1006, "arch": 288, "val": 144, "test": 359}
  for split in data.SPLITS:
    x, y = digits.numpy(split)
    n = (info.split_sizes["weight"] + info.split_sizes["arch"] if split == "train_full"
         else info.split_sizes[split])
    assert x.shape == (n, 16, 16, 1) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    assert set(np.unique(y)) == set(range(10))
  x_full, _ = digits.numpy("train_full")
  mean, std = data.normalization_constants(x_full)
  np.testing.assert_allclose(info.mean, mean)
  np.testing.assert_allclose(info.std, std)


def test_digits_splits_disjoint_and_cover_dataset(digits):
  hashes = {split: _row_hashes(digits.numpy(split)[0]) for split in data.SPLITS}
  all_hashes = [h for s in ("weight", "arch", "val", "test") for h in hashes[s]]
  assert len(set(all_hashes)) == len(all_hashes) == 1797  # Pairwise disjoint, nothing lost.
  assert set(hashes["train_full"]) == set(hashes["weight"]) | set(hashes["arch"])


def test_digits_matches_sklearn_and_split_codes(digits):
  from sklearn.datasets import load_digits

  raw = load_digits()
  codes = data.assign_splits(1797, 0, 0.1, 0.2, 0.2)
  order = data._hash_order(1797, 0, 0)  # Members come in the seeded hash order, not sklearn's.
  for split in ("weight", "test"):
    x, y = digits.numpy(split)
    idx = order[codes[order] == data._CODES[split]]
    np.testing.assert_array_equal(y, raw.target[idx])
    expected = tf.image.resize(raw.images[idx][..., None] / 16.0, [16, 16]).numpy()
    np.testing.assert_allclose(x, expected, atol=1e-6)
    # Corners of the bilinear upsample repeat the 8x8 corners exactly.
    np.testing.assert_allclose(x[:, 0, 0, 0], raw.images[idx, 0, 0] / 16.0, atol=1e-6)


def test_digits_determinism_and_seed_dependence(digits):
  again = data.load_splits(data.DataConfig(dataset="digits", batch_size=32, seed=0))
  bigger_batch = data.load_splits(data.DataConfig(dataset="digits", batch_size=100, seed=0))
  other = data.load_splits(data.DataConfig(dataset="digits", batch_size=32, seed=1))
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
  splits = data.load_splits(data.DataConfig(dataset="digits", batch_size=64, augment=False))
  x, _ = _first(splits.dataset("arch", training=True))
  assert set(_row_hashes(x.numpy())) <= set(_row_hashes(splits.numpy("arch")[0]))


@pytest.mark.parametrize("flip", [False, True])
def test_augment_fn_is_a_padded_crop_and_maybe_flip(flip):
  image = tf.constant(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
  fn = data._augment_fn(size=8, channels=3, pad=1, flip=flip, salt=5)
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


def test_search_dataset_structure(digits):
  ds = digits.search_dataset()
  (xw, yw), (xa, ya) = ds.element_spec
  assert xw.shape.as_list() == xa.shape.as_list() == [32, 16, 16, 1]
  assert yw.dtype == ya.dtype == tf.int32
  (bw, lw), (ba, la) = _first(ds)
  assert bw.shape == (32, 16, 16, 1) and la.shape == (32,)


def test_rotating_search_partitions_train_full_each_epoch():
  splits = data.load_splits(data.DataConfig(dataset="digits", batch_size=64, augment=False, seed=2))
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


# ------------------------------------------------------------------------------------------------
# TFDS (mocked; nothing downloads).


@pytest.mark.parametrize("name, shape, classes, mean", [
    ("cifar10", (32, 32, 3), 10, data._CIFAR10_MEAN),
    ("cifar100", (32, 32, 3), 100, data._CIFAR100_MEAN),
    ("imagenette/160px", (64, 64, 3), 10, data._IMAGENET_MEAN),
])
def test_tfds_mocked(tmp_path, name, shape, classes, mean):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=40):
    splits = data.load_splits(data.DataConfig(dataset=name, data_dir=str(tmp_path), batch_size=8))
    info = splits.info
    assert info.input_shape == shape and info.num_classes == classes == len(info.class_names)
    assert info.mean == mean
    assert info.split_sizes == {"weight": 28, "arch": 8, "val": 4, "test": 40}
    hashes = {}
    for split in data.SPLITS:
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
  out = data.remap_imagenet100_labels(labels).numpy()
  kept = np.flatnonzero(out >= 0)
  np.testing.assert_array_equal(kept, data.IMAGENET100_CLASSES)
  np.testing.assert_array_equal(out[kept], np.arange(100))
  assert (out[out < 0] == -1).all() and (out < 0).sum() == 900


def test_imagenet100_mocked_filters_and_remaps(tmp_path):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=300):
    splits = data.load_splits(data.DataConfig(dataset="imagenet100", data_dir=str(tmp_path),
                                              batch_size=4, image_size=32))
    raw = tfds.load("imagenet2012", split="validation", data_dir=str(tmp_path), download=False,
                    as_supervised=True, shuffle_files=False,
                    decoders={"image": tfds.decode.SkipDecoding()})
    raw_labels = np.array([int(y) for _, y in raw])
    x, y = splits.numpy("test")
  wanted = [data.IMAGENET100_CLASSES.index(l) for l in raw_labels if l in data.IMAGENET100_CLASSES]
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
    data.load_splits(data.DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
  assert time.monotonic() - start < 20
  msg = str(err.value)
  assert "--data_dir" in msg and "--download" in msg
  assert os.path.join(str(tmp_path), "downloads", "manual") in msg
  assert os.path.join(str(tmp_path), "cifar10", "3.0.2") in msg


# ------------------------------------------------------------------------------------------------
# Image folders.


_write_images = helpers.write_image_folder


def test_image_folder_with_test_dir_and_cache_reuse(tmp_path, monkeypatch):
  root = str(tmp_path / "imgs")
  train = _write_images(root, "train", per_class=10)
  test = _write_images(root, "test", per_class=2)
  cfg = data.DataConfig(dataset=f"image_folder:{root}", cache_dir=str(tmp_path / "cache"),
                        batch_size=4, max_test_examples=5)
  splits = data.load_splits(cfg)
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

  monkeypatch.setattr(data, "_decode_files", no_decoding)
  again = data.load_splits(cfg)
  for split in data.SPLITS:
    np.testing.assert_array_equal(again.numpy(split)[0], splits.numpy(split)[0])
  # A changed file invalidates the cache key, so it is decoded again.
  path = next(iter(train))
  os.utime(path, ns=(1, 1))
  with pytest.raises(AssertionError, match="decoded again"):
    data.load_splits(cfg)


def test_image_folder_splits_come_in_seeded_order_not_class_order(tmp_path):
  # Folders are read class by class; "the first N test / validation images" (evaluation's
  # --num_examples, the per-epoch --val_examples) must still be a random subset, and exactly the
  # subset that --max_test_examples=N keeps.
  root = str(tmp_path / "imgs")
  _write_images(root, "train", per_class=20)
  _write_images(root, "test", per_class=8)
  cfg = data.DataConfig(dataset=f"image_folder:{root}", cache_dir=str(tmp_path / "cache"), batch_size=4)
  splits = data.load_splits(cfg)
  for split in ("test", "val", "weight"):
    x, y = splits.numpy(split)
    assert np.any(np.diff(y) < 0), f"{split} is in class order: {y}"
    assert len(set(y[:6])) >= 2, split
    batches = list(splits.dataset(split, training=False).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)  # Pipeline = numpy order.
  x, y = splits.numpy("test")
  capped = data.load_splits(dataclasses.replace(cfg, max_test_examples=7))
  xc, yc = capped.numpy("test")
  np.testing.assert_array_equal(xc, x[:7])
  np.testing.assert_array_equal(yc, y[:7])
  other = data.load_splits(dataclasses.replace(cfg, seed=1)).numpy("test")[1]
  assert sorted(other) == sorted(y) and list(other) != list(y)  # Same members (whole split), other order.


def test_image_folder_without_test_dir_carves_test(tmp_path):
  root = str(tmp_path / "imgs")
  _write_images(root, "train", per_class=10, fmt="jpg", classes=("a", "b"))
  splits = data.load_splits(data.DataConfig(dataset=f"image_folder:{root}", image_size=8,
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
  again = data.load_splits(splits.config)
  np.testing.assert_array_equal(again.numpy("test")[0], splits.numpy("test")[0])


def test_image_folder_mismatched_sizes_name_the_file(tmp_path):
  root = str(tmp_path / "imgs")
  _write_images(root, "train", per_class=2, classes=("a", "b"))
  odd = os.path.join(root, "train", "b", "zzz.png")
  tf.io.write_file(odd, tf.io.encode_png(np.zeros((7, 6, 3), np.uint8)))
  with pytest.raises(UserInputError, match="zzz.png.*share one size"):
    data.load_splits(data.DataConfig(dataset=f"image_folder:{root}", cache_dir=str(tmp_path / "c")))


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
  cfg = data.DataConfig(dataset=f"image_folder:{cifar_jpeg_root}/",
                        cache_dir=os.path.join(cifar_jpeg_root, ".cache"), batch_size=256)
  splits = data.load_splits(cfg)
  info = splits.info
  assert info.input_shape == (32, 32, 3) and info.num_classes == 10
  assert info.class_names == data._CIFAR10_NAMES
  sizes = info.split_sizes
  assert sizes["weight"] + sizes["arch"] + sizes["val"] == 50_000 and sizes["test"] == 10_000
  assert sizes == {"weight": 35_000, "arch": 10_000, "val": 5_000, "test": 10_000}
  np.testing.assert_allclose(info.mean, data._CIFAR10_MEAN, atol=0.01)  # JPEG differs slightly.
  np.testing.assert_allclose(info.std, data._CIFAR10_STD, atol=0.01)
  _, y_test = splits.numpy("test")
  assert np.bincount(y_test).tolist() == [1000] * 10
  xb, yb = _first(splits.dataset("train_full", training=True))
  assert xb.shape == (256, 32, 32, 3) and yb.dtype == tf.int32


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
    data.load_splits(data.DataConfig(**kwargs))


def test_unknown_dataset_lists_choices():
  with pytest.raises(UserInputError, match="valid choices: digits, cifar10, cifar100"):
    data.DataConfig(dataset="imagenet")


def test_unknown_imagenette_variant(tmp_path):
  with pytest.raises(UserInputError, match="--dataset.*160px"):
    data.load_splits(data.DataConfig(dataset="imagenette/99px", data_dir=str(tmp_path)))


def test_image_folder_errors(tmp_path):
  with pytest.raises(UserInputError, match="--dataset=image_folder:.*no such directory"):
    data.load_splits(data.DataConfig(dataset=f"image_folder:{tmp_path / 'nope'}"))
  os.makedirs(tmp_path / "empty" / "train" / "a")
  with pytest.raises(UserInputError, match="--dataset=image_folder:.*holds no images"):
    data.load_splits(data.DataConfig(dataset=f"image_folder:{tmp_path / 'empty'}", cache_dir=str(tmp_path)))
  os.makedirs(tmp_path / "flat")
  with pytest.raises(UserInputError, match="no train/ folder"):
    data.load_splits(data.DataConfig(dataset=f"image_folder:{tmp_path / 'flat'}"))


def test_too_few_examples_for_weight_split():
  with pytest.raises(UserInputError, match="--max_train_examples"):
    data.load_splits(data.DataConfig(dataset="digits", max_train_examples=2))


def test_unknown_split_name(digits):
  with pytest.raises(UserInputError, match="train_full"):
    digits.dataset("training", training=True)
