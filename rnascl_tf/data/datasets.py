"""Datasets and tf.data input pipelines for RNAS-CL.

Every dataset is cut into the splits the method needs: `weight` (network weights during search),
`arch` (architecture and tutor logits during search) and `val`, all carved out of the training set,
plus `test`. `train_full` = weight + arch is what a teacher or a final network trains on. Pipelines
yield float32 images in [0, 1] and int32 labels; models normalise inside, using the per-channel
constants in `DatasetInfo`.

Membership of every split comes from one seeded hash of each example's index (`assign_splits`), so
it is deterministic given the seed, independent of the batch size, and works the same for arrays in
memory (digits, image folders) and for TFDS streams read with enumerate + filter (CIFAR, Imagenette,
ImageNet-100).
"""

import dataclasses
import hashlib
import os
import tempfile
import zipfile
import zlib
from typing import Iterator

import numpy as np
import tensorflow as tf

from rnascl_tf.configs import IMAGE_FOLDER_PREFIX, IMAGENETTE_PREFIX, DataConfig, check_dataset_name
from rnascl_tf.errors import UserInputError

SPLITS = ("weight", "arch", "val", "test", "train_full")
_CODES = {"weight": 0, "arch": 1, "val": 2, "test": 3}
_UNUSED = -1


# The paper's ImageNet-100: these 100 ImageNet-1k class indices (TFDS `imagenet2012` label ids), in
# this order, become labels 0..99. There is no TFDS builder for it; we filter `imagenet2012`.
IMAGENET100_CLASSES = (
    15, 45, 54, 57, 64, 74, 90, 99, 119, 120, 122, 131, 137, 151, 155, 157, 158, 166, 167, 169,
    176, 180, 209, 211, 222, 228, 234, 236, 242, 246, 267, 268, 272, 275, 277, 281, 299, 305, 313,
    317, 331, 342, 368, 374, 407, 421, 431, 449, 452, 455, 479, 494, 498, 503, 508, 544, 560, 570,
    592, 593, 599, 606, 608, 619, 620, 653, 659, 662, 665, 667, 674, 682, 703, 708, 717, 724, 748,
    758, 765, 766, 772, 775, 796, 798, 830, 854, 857, 858, 872, 876, 882, 904, 908, 936, 938, 953,
    959, 960, 993, 994)
_IMAGENET_NUM_CLASSES = 1000

# Well-known per-channel constants of [0, 1] pixels (CIFAR: over the training set, as in DARTS).
_CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
_CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
_CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)
_CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck")

# A split's decoded stream is cached in memory only below this size; ImageNet-100 is re-read.
_CACHE_LIMIT_BYTES = 1 << 30
# Shuffle buffer of streams too big to cache (ImageNet-100; TFDS shuffled its files on writing).
_STREAM_SHUFFLE_BUFFER = 10_000
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_CACHE_FORMAT = "rnascl_tf-image_folder-v1"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about a loaded dataset.

  Attributes:
    name: the `--dataset` value.
    input_shape: (H, W, C) of the images the pipelines yield.
    num_classes: number of labels (0 .. num_classes - 1).
    mean: per-channel mean of [0, 1] pixels, for the model's own normalisation.
    std: per-channel standard deviation of [0, 1] pixels.
    class_names: one name per label.
    split_sizes: {"weight": n, "arch": n, "val": n, "test": n}. For imagenet100 the training-side
      sizes are estimates (the class filter runs on a stream), the test size is exact on real data.
  """
  name: str
  input_shape: tuple[int, int, int]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  class_names: tuple[str, ...]
  split_sizes: dict


# ------------------------------------------------------------------------------------------------
# Split membership.


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser on a uint64 array (wraps mod 2**64; stable across NumPy versions)."""
  x = x.astype(np.uint64, copy=True)
  x += np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _hash_order(num_examples: int, seed: int, salt: int) -> np.ndarray:
  """A seeded permutation of range(num_examples): indices sorted by a hash of (seed, salt, index)."""
  key = _splitmix64(np.array([(seed * 1_000_003 + salt) % (1 << 64)], dtype=np.uint64))
  hashes = _splitmix64(np.arange(num_examples, dtype=np.uint64) ^ key)
  return np.argsort(hashes, kind="stable")


# assign_splits salt of a dataset's own test split (the training pool uses 0), so that its order is
# not the pool's under the same seed.
_TEST_SALT = 1


def _count(total: int, fraction: float) -> int:
  # A non-zero fraction always gets at least one example, so tiny subsets keep every split alive.
  if fraction <= 0.0 or total <= 0:
    return 0
  return min(total, max(1, int(round(total * fraction))))


def assign_splits(num_examples: int, seed: int, val_fraction: float, arch_fraction: float,
                  test_fraction: float = 0.0, max_train: int | None = None,
                  max_test: int | None = None, salt: int = 0) -> np.ndarray:
  """Assigns each example index to a split by a seeded hash permutation of the indices.

  The permuted indices are cut into consecutive blocks: test (`test_fraction` of all), then val and
  arch (their fractions of the rest, the training set) and weight (the remainder). With a cap, each
  block keeps only its first members, so a subset is a seeded random subset cut proportionally.
  The same codes serve arrays (`x[codes == c]`) and streams (`enumerate` + `filter` on the codes).

  Args:
    num_examples: number of examples in the source (array length or stream cardinality).
    seed: the data seed; another seed gives other members.
    val_fraction: fraction of the training set for `val`.
    arch_fraction: fraction of the training set for `arch`.
    test_fraction: fraction of all examples for `test` (0 when the dataset has its own test split;
      1 to mark a whole test split).
    max_train: cap on weight + arch + val together (None: no cap).
    max_test: cap on test (None: no cap).
    salt: decorrelates different sources (e.g. a train and a test split) under one seed.

  Returns:
    int8 array [num_examples] of split codes (weight 0, arch 1, val 2, test 3; -1 = unused).
  """
  order = _hash_order(num_examples, seed, salt)
  n_test = _count(num_examples, test_fraction)
  rest = num_examples - n_test
  n_val, n_arch = _count(rest, val_fraction), _count(rest, arch_fraction)
  n_weight = max(0, rest - n_val - n_arch)
  keep = {"test": n_test, "val": n_val, "arch": n_arch, "weight": n_weight}
  if max_test is not None:
    keep["test"] = min(n_test, max_test)
  if max_train is not None and max_train < rest:
    keep["val"] = min(n_val, _count(max_train, val_fraction))
    keep["arch"] = min(n_arch, _count(max_train, arch_fraction))
    keep["weight"] = min(n_weight, max(0, max_train - keep["val"] - keep["arch"]))
  codes = np.full(num_examples, _UNUSED, dtype=np.int8)
  start = 0
  for split, size in (("test", n_test), ("val", n_val), ("arch", n_arch), ("weight", n_weight)):
    codes[order[start:start + keep[split]]] = _CODES[split]
    start += size
  return codes


def _split_code_set(split: str) -> tuple[int, ...]:
  if split == "train_full":
    return (_CODES["weight"], _CODES["arch"])
  if split not in _CODES:
    raise UserInputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
  return (_CODES[split],)


def imagenet100_label_table() -> np.ndarray:
  """Returns an int32 [1000] table: ImageNet-1k label -> ImageNet-100 label (0..99), or -1."""
  table = np.full(_IMAGENET_NUM_CLASSES, -1, dtype=np.int32)
  table[list(IMAGENET100_CLASSES)] = np.arange(len(IMAGENET100_CLASSES), dtype=np.int32)
  return table


def remap_imagenet100_labels(labels):
  """Maps ImageNet-1k labels to ImageNet-100 labels (-1 for classes outside the 100).

  Args:
    labels: integer tensor or array of ImageNet-1k labels in 0..999.

  Returns:
    int32 tensor of the same shape: 0..99 in the order of `IMAGENET100_CLASSES`, or -1.
  """
  return tf.gather(tf.constant(imagenet100_label_table()), tf.cast(labels, tf.int32))


def normalization_constants(x) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of images as [0, 1] pixels.

  Args:
    x: [N, H, W, C] uint8 (divided by 255) or float array already in [0, 1].

  Returns:
    (mean, std), each a tuple of C floats.
  """
  x = np.asarray(x)
  if x.ndim != 4 or len(x) == 0:
    raise UserInputError(f"normalization_constants expects a non-empty [N, H, W, C] array, got shape {x.shape}")
  scale = 255.0 if x.dtype == np.uint8 else 1.0
  total = np.zeros(x.shape[-1], np.float64)
  total_sq = np.zeros(x.shape[-1], np.float64)
  # Chunks keep the float64 copy small (CIFAR as float64 at once would be 1.2 GB).
  for start in range(0, len(x), 2048):
    chunk = x[start:start + 2048].astype(np.float64) / scale
    total += chunk.sum(axis=(0, 1, 2))
    total_sq += np.square(chunk).sum(axis=(0, 1, 2))
  count = x.shape[0] * x.shape[1] * x.shape[2]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ------------------------------------------------------------------------------------------------
# Image ops (graph-safe).


def _to_float01(image):
  if image.dtype == tf.uint8:
    return tf.cast(image, tf.float32) / 255.0
  return tf.cast(image, tf.float32)


def _to_uint8(image_0_255):
  return tf.cast(tf.clip_by_value(tf.round(image_0_255), 0.0, 255.0), tf.uint8)


def _resize_square_uint8(image, size: int):
  """Resizes a uint8 image to size x size (bilinear, antialiased when shrinking)."""
  return _to_uint8(tf.image.resize(image, [size, size], antialias=True))


def _resize_shorter_center_crop(image, shorter: int, crop: int):
  """Resizes the shorter side of a uint8 image to `shorter`, then takes the centre crop x crop."""
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = shorter / tf.reduce_min(hw)
  new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), crop)
  image = tf.image.resize(image, new_hw, antialias=True)
  image = tf.image.resize_with_crop_or_pad(image, crop, crop)
  return _to_uint8(image)


def _augment_fn(size: int, channels: int, pad: int, flip: bool, salt: int):
  """Returns a map fn ((image, label), r) -> (float image, label): pad, random crop, random flip.

  `r` is a per-element int64 from `tf.data.Dataset.random`, so the stateless ops differ per element
  and per epoch yet replay exactly for one seed.
  """

  def fn(example, r):
    image, label = example
    image = _to_float01(image)
    seeds = tf.random.experimental.stateless_split(tf.stack([r, tf.constant(salt, tf.int64)]), 2)
    if pad:
      # Zero padding as in the DARTS / RNAS-CL PyTorch code (RandomCrop(32, padding=4)).
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size, size, channels], seed=seeds[0])
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image, label

  return fn


def _derived_seed(seed: int, *parts: str) -> int:
  return zlib.crc32("/".join([str(seed), *parts]).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------------
# Sources: where a split's un-augmented examples come from.


class _ArraySource:
  """Examples held in memory: a pool cut by codes, and optionally a separate test set.

  Each split's members come in the seeded hash order of `assign_splits` (pool: salt 0, separate
  test set: salt 1), not in the arrays' order: an image folder is read class by class, and in
  source order "the first 300 test images" or "the first 500 validation images" would be three or
  five classes only. With the hash order the first N members of a split are the members a cap of N
  would have kept, a seeded random subset.
  """

  def __init__(self, x, y, codes, test=None, seed: int = 0):
    self._x, self._y, self._codes = x, y, codes
    self._test = test  # (x, y, codes) or None: then test comes from the pool.
    # The permutations assign_splits cut the splits from, computed once (every pipeline asks).
    self._order = {"pool": _hash_order(len(codes), seed, 0)}
    if test is not None:
      self._order["test"] = _hash_order(len(test[2]), seed, _TEST_SALT)
    self._tensors = {}
    self.aug_margin = 0  # The augmented base is the same image as the eval one.

  def _arrays_and_codes(self, split):
    if split == "test" and self._test is not None:
      return self._test
    return self._x, self._y, self._codes

  def _indices(self, split):
    _, _, codes = self._arrays_and_codes(split)
    order = self._order["test" if (split == "test" and self._test is not None) else "pool"]
    return order[np.isin(codes[order], _split_code_set(split))]

  def num_examples(self, split):
    return int(len(self._indices(split)))

  def arrays(self, split, augmented=False):
    del augmented
    x, y, _ = self._arrays_and_codes(split)
    idx = self._indices(split)
    return x[idx], y[idx]

  def base(self, split, augmented=False):
    del augmented
    x, y, _ = self._arrays_and_codes(split)
    key = "test" if (split == "test" and self._test is not None) else "pool"
    if key not in self._tensors:
      # One tensor copy per array, shared by every pipeline; pipelines only gather indices.
      self._tensors[key] = (tf.constant(x), tf.constant(y))
    x_t, y_t = self._tensors[key]
    idx = tf.data.Dataset.from_tensor_slices(self._indices(split).astype(np.int64))
    # Indices are shuffled before this gather runs, so the shuffle buffer holds ints, not images.
    return idx, lambda i: (tf.gather(x_t, i), tf.gather(y_t, i))

  def cacheable(self, split, augmented=False):
    del split, augmented
    return False  # Already in memory.


class _TfdsSource:
  """Examples streamed from TFDS, selected by enumerate + filter on the split codes."""

  def __init__(self, config, tfds_name, train_split, test_split, train_codes, test_codes,
               preprocess, base_shape, aug_shape, label_table=None, size_scale=1.0):
    self._config = config
    self._name = tfds_name
    self._raw = {"train": train_split, "test": test_split}
    self._codes = {"train": train_codes, "test": test_codes}
    self._preprocess = preprocess  # (uint8 image, augmented: bool) -> uint8 image
    self._base_shape, self._aug_shape = base_shape, aug_shape
    self._label_table = label_table
    self._size_scale = size_scale  # Fraction of raw examples kept by the label filter (estimate).
    self.aug_margin = aug_shape[0] - base_shape[0]

  def _side(self, split):
    return "test" if split == "test" else "train"

  def num_examples(self, split):
    codes = self._codes[self._side(split)]
    n = int(np.isin(codes, _split_code_set(split)).sum())
    return int(round(n * self._size_scale)) if self._label_table is not None else n

  def base(self, split, augmented=False):
    side = self._side(split)
    codes_t = tf.constant(self._codes[side])
    wanted = tf.constant(_split_code_set(split), tf.int8)
    ds = _tfds_load(self._config, self._name, self._raw[side], skip_decoding=True)
    ds = ds.enumerate().filter(
        lambda i, ex: tf.reduce_any(tf.equal(tf.gather(codes_t, i), wanted)))
    if self._label_table is not None:
      table = tf.constant(self._label_table)
      ds = ds.filter(lambda i, ex: tf.gather(table, tf.cast(ex[1], tf.int32)) >= 0)
      relabel = lambda y: tf.gather(table, tf.cast(y, tf.int32))
    else:
      relabel = lambda y: tf.cast(y, tf.int32)
    shape = self._aug_shape if augmented else self._base_shape
    preprocess = self._preprocess

    def decode(i, ex):
      del i
      # Images are decoded only after the filters, so ImageNet-100 skips 90% of the JPEG work.
      image = tf.io.decode_image(ex[0], channels=shape[-1], expand_animations=False)
      image = tf.ensure_shape(preprocess(image, augmented), shape)
      return image, relabel(ex[1])

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE), None

  def arrays(self, split, augmented=False):
    xs, ys = [], []
    ds, _ = self.base(split, augmented)
    for x, y in ds.batch(512).as_numpy_iterator():
      xs.append(x)
      ys.append(y)
    shape = self._aug_shape if augmented else self._base_shape
    if not xs:
      return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int32)

  def cacheable(self, split, augmented=False):
    shape = self._aug_shape if augmented else self._base_shape
    return self.num_examples(split) * int(np.prod(shape)) <= _CACHE_LIMIT_BYTES


# ------------------------------------------------------------------------------------------------
# Public splits object.


class DataSplits:
  """The splits of one dataset and their tf.data pipelines.

  Attributes:
    info: the `DatasetInfo`.
    config: the `DataConfig` it was loaded with.
  """

  def __init__(self, info: DatasetInfo, config: DataConfig, source, flip: bool):
    self.info = info
    self.config = config
    self._source = source
    self._flip = flip

  def _size(self, split):
    if split == "train_full":
      return self.info.split_sizes["weight"] + self.info.split_sizes["arch"]
    _split_code_set(split)
    return self.info.split_sizes[split]

  def steps_per_epoch(self, split: str) -> int:
    """Returns examples // global batch size for `split` (at least 1)."""
    return max(1, self._size(split) // self.config.batch_size)

  def numpy(self, split: str):
    """Returns the un-augmented, unbatched examples of `split` in a fixed order.

    The order is the one of `dataset(split, training=False)`: for in-memory datasets (digits,
    image_folder) the seeded hash order of the split assignment, so the first N examples are a
    seeded random subset; for TFDS datasets the TFDS file order (shuffled at preparation time).

    Args:
      split: one of "weight", "arch", "val", "test", "train_full".

    Returns:
      (x, y): x uint8 [N, H, W, C] (float32 in [0, 1] for digits), y int32 [N].
    """
    _split_code_set(split)
    return self._source.arrays(split, augmented=False)

  def _finish(self, ds, gather, split, training, augmented, cache, repeat, batch_size,
              drop_remainder, shuffle_buffer, skip_examples=0):
    """Shared tail: cache, shuffle, repeat, skip, gather, augment or convert, batch, prefetch."""
    if cache:
      ds = ds.cache()  # Before augmentation: decoded once, augmented afresh every epoch.
    if training:
      ds = ds.shuffle(shuffle_buffer, seed=_derived_seed(self.config.seed, "shuffle", split),
                      reshuffle_each_iteration=True)
    if repeat:
      ds = ds.repeat()
    if skip_examples:
      # Exact resume: skip what an uninterrupted run consumed, before the costly gather/augment.
      ds = ds.skip(skip_examples)
    if gather is not None:
      ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    if augmented:
      h, w, c = self.info.input_shape
      pad = 0 if self._source.aug_margin else max(1, h // 8)
      rand = tf.data.Dataset.random(seed=_derived_seed(self.config.seed, "augment", split),
                                    rerandomize_each_iteration=True).skip(skip_examples)
      ds = tf.data.Dataset.zip((ds, rand)).map(
          _augment_fn(h, c, pad, self._flip, _derived_seed(self.config.seed, "salt", split)),
          num_parallel_calls=tf.data.AUTOTUNE)
    else:
      ds = ds.map(lambda x, y: (_to_float01(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    # Multi-worker: the default (AUTO) would shard TFDS by file, so each worker's `enumerate` would
    # restart at 0 and split membership would differ per worker. DATA sharding keeps it global.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)

  def dataset(self, split: str, training: bool, repeat: bool | None = None,
              batch_size: int | None = None, drop_remainder: bool | None = None,
              skip_batches: int = 0) -> tf.data.Dataset:
    """Builds the batched pipeline of one split.

    Args:
      split: one of "weight", "arch", "val", "test", "train_full" (= weight + arch).
      training: True: seeded shuffle (reshuffled every epoch) and augmentation if
        `config.augment`; False: fixed order, no augmentation.
      repeat: repeat forever (default: `training`).
      batch_size: global batch size (default: `config.batch_size`).
      drop_remainder: drop the last partial batch (default: `training`).
      skip_batches: start as if this many batches had been drawn already (exact resume of a run
        after `skip_batches` steps: same order and same augmentation as without the interruption).

    Returns:
      A dataset of (images float32 [B, H, W, C] in [0, 1], labels int32 [B]).
    """
    n = self._size(split)
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    batch_size = batch_size or self.config.batch_size
    if n == 0:
      raise UserInputError(
          f"split {split!r} of --dataset={self.config.dataset} is empty; check --val_fraction, "
          f"--arch_fraction, --test_fraction, --max_train_examples and --max_test_examples")
    augmented = training and self.config.augment
    cache = self._source.cacheable(split, augmented)
    buffer = n if (cache or isinstance(self._source, _ArraySource)) else min(n, _STREAM_SHUFFLE_BUFFER)
    ds, gather = self._source.base(split, augmented)
    return self._finish(ds, gather, split, training, augmented, cache, repeat, batch_size,
                        drop_remainder, buffer, skip_examples=skip_batches * batch_size)

  def search_dataset(self, rotating: bool = False, skip_batches: int = 0) -> tf.data.Dataset:
    """Builds the search pipeline: an endless zip of weight batches and arch batches.

    Both sides are training pipelines (shuffled, augmented if `config.augment`) batched at the
    global batch size with the remainder dropped; run it for `steps_per_epoch("weight")` steps per
    epoch.

    Args:
      rotating: the authors' compatibility mode. Instead of fixed weight/arch sets, every epoch
        shuffles `train_full` (seeded, different per epoch) and gives its last `arch` share (the
        arch split's size) to the arch side and the rest to the weight side. An epoch here is
        `steps_per_epoch("weight")` steps; the smaller arch share repeats within the epoch to keep
        pace. Needs `train_full` in memory, so it is refused for imagenet100.
      skip_batches: start after this many steps (exact resume, see `dataset`).

    Returns:
      A dataset of ((x_weight, y_weight), (x_arch, y_arch)).
    """
    if self.info.split_sizes["arch"] == 0 or self.info.split_sizes["weight"] == 0:
      raise UserInputError("the search needs non-empty weight and arch splits: set --arch_fraction > 0 "
                           "and leave enough training examples (--max_train_examples)")
    if not rotating:
      return tf.data.Dataset.zip((self.dataset("weight", training=True, repeat=True, skip_batches=skip_batches),
                                  self.dataset("arch", training=True, repeat=True, skip_batches=skip_batches)))
    return self._rotating_search_dataset(skip_batches)

  def _rotating_search_dataset(self, skip_batches: int = 0):
    if isinstance(self._source, _TfdsSource) and self._source._label_table is not None:
      raise UserInputError(f"search_dataset(rotating=True) keeps train_full in memory, which "
                           f"--dataset={self.config.dataset} does not fit; use the fixed weight/arch split")
    augmented = self.config.augment
    x, y = self._source.arrays("train_full", augmented=augmented)
    x_t, y_t = tf.constant(x), tf.constant(y)
    n = len(y)
    n_arch = self.info.split_sizes["arch"]
    n_weight = n - n_arch
    batch = self.config.batch_size
    per_epoch = max(1, n_weight // batch) * batch
    seed = _derived_seed(self.config.seed, "rotating")

    def epoch_order(epoch):
      # A stateless permutation per epoch: both sides compute the same one, so they never overlap.
      noise = tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
      return tf.argsort(noise)

    def side(lo, hi):
      def per_epoch_indices(epoch):
        part = epoch_order(epoch)[lo:hi]
        return tf.data.Dataset.from_tensor_slices(part).repeat().take(per_epoch)
      return tf.data.Dataset.counter().flat_map(per_epoch_indices)

    def gather(i):
      return tf.gather(x_t, i), tf.gather(y_t, i)

    sides = []
    for name, ds in (("weight", side(0, n_weight)), ("arch", side(n_weight, n))):
      sides.append(self._finish(ds, gather, "rotating-" + name, training=False, augmented=augmented,
                                cache=False, repeat=False, batch_size=batch, drop_remainder=True,
                                shuffle_buffer=0, skip_examples=skip_batches * batch))
    return tf.data.Dataset.zip(tuple(sides))


# ------------------------------------------------------------------------------------------------
# Loading.


def _check_sizes(config: DataConfig, sizes: dict) -> None:
  if sizes["weight"] < 1:
    raise UserInputError(
        f"--dataset={config.dataset}: no training examples are left for the weight split "
        f"(sizes {sizes}); lower --val_fraction/--arch_fraction or raise --max_train_examples")
  if sizes["test"] < 1:
    raise UserInputError(f"--dataset={config.dataset}: the test split is empty (sizes {sizes}); "
                         f"raise --test_fraction or --max_test_examples")


def _sizes_from_codes(*code_arrays) -> dict:
  codes = np.concatenate(code_arrays)
  return {split: int((codes == code).sum()) for split, code in _CODES.items()}


def load_splits(config: DataConfig) -> DataSplits:
  """Loads `config.dataset` and cuts it into weight/arch/val/test splits.

  Args:
    config: the data configuration.

  Returns:
    The `DataSplits`.

  Raises:
    UserInputError: unknown dataset, missing files or TFDS data, or empty splits.
  """
  name = config.dataset
  check_dataset_name(name)
  if name == "digits":
    return _load_digits(config)
  if name.startswith(IMAGE_FOLDER_PREFIX):
    return _load_image_folder(config, name[len(IMAGE_FOLDER_PREFIX):])
  return _load_tfds(config)


def _load_digits(config: DataConfig) -> DataSplits:
  from sklearn.datasets import load_digits  # Local: only this dataset needs scikit-learn.

  digits = load_digits()
  size = config.image_size or 16
  x = digits.images.astype(np.float32)[..., None] / 16.0  # Pixel values are 0..16.
  if size != x.shape[1]:
    x = tf.image.resize(x, [size, size], method="bilinear").numpy()
  x = np.clip(x, 0.0, 1.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  codes = assign_splits(len(y), config.seed, config.val_fraction, config.arch_fraction,
                        config.test_fraction, config.max_train_examples, config.max_test_examples)
  sizes = _sizes_from_codes(codes)
  _check_sizes(config, sizes)
  mean, std = normalization_constants(x[np.isin(codes, _split_code_set("train_full"))])
  info = DatasetInfo(name="digits", input_shape=(size, size, 1), num_classes=10, mean=mean, std=std,
                     class_names=tuple(str(i) for i in range(10)), split_sizes=sizes)
  # Mirrored digits are not digits: no horizontal flip.
  return DataSplits(info, config, _ArraySource(x, y, codes, seed=config.seed), flip=False)


# --- image folders ---


def _list_image_folder_split(split_dir: str, classes: list[str] | None, root: str, dataset_flag: str):
  """Lists (relative paths, labels, class names) of `split_dir/<class>/<image>`."""
  found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
  is_train = classes is None
  if is_train:
    classes = found
    if not classes:
      raise UserInputError(f"{dataset_flag}: {split_dir} has no class folders; expected "
                           f"{root}/train/<class>/<image> (one folder per class)")
  else:
    unknown = sorted(set(found) - set(classes))
    if unknown:
      raise UserInputError(f"{dataset_flag}: {split_dir} has class folders {unknown} that "
                           f"{root}/train does not have; test classes must be train classes")
  paths, labels = [], []
  for label, cls in enumerate(classes):
    cls_dir = os.path.join(split_dir, cls)
    if not os.path.isdir(cls_dir):
      continue
    files = sorted(e.name for e in os.scandir(cls_dir)
                   if e.is_file() and e.name.lower().endswith(_IMAGE_EXTENSIONS) and not e.name.startswith("."))
    if not files and is_train:  # A test folder may lack some classes; train may not.
      raise UserInputError(f"{dataset_flag}: class folder {cls_dir} holds no images "
                           f"({', '.join(_IMAGE_EXTENSIONS)}); remove it or add images")
    paths += [os.path.join(os.path.relpath(cls_dir, root), f) for f in files]
    labels += [label] * len(files)
  if not paths:
    raise UserInputError(f"{dataset_flag}: {split_dir} holds no images")
  return paths, np.asarray(labels, np.int32), classes


def _decode_files(paths: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Decodes image files in parallel, in order.

  Yields:
    Batches (flat uint8 pixels of the batch's images concatenated, int shapes [b, 3] (H, W, C)):
    ragged batches cut the per-image Python overhead (60k CIFAR JPEGs: ~10 s instead of ~25 s).
  """

  def decode(path):
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    return tf.reshape(image, [-1]), tf.shape(image)

  files = tf.data.Dataset.from_tensor_slices(paths)
  batches = files.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ragged_batch(1024).prefetch(2)
  try:
    for flat, shapes in batches:
      yield flat.flat_values.numpy(), shapes.numpy()
  except tf.errors.OpError:
    # Find the culprit one by one, to name it.
    for path in paths:
      try:
        tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
      except tf.errors.OpError as e:
        raise UserInputError(f"could not decode image file {path}: {e.message}") from e
    raise


def _decode_image_list(paths: list[str], dataset_flag: str) -> np.ndarray:
  out, first, start = None, None, 0
  for flat, shapes in _decode_files(paths):
    if out is None:
      first = tuple(int(d) for d in shapes[0])
      out = np.empty((len(paths), *first), np.uint8)
    bad = np.flatnonzero(np.any(shapes != np.asarray(first), axis=1))
    if len(bad):
      i, shape = start + int(bad[0]), tuple(int(d) for d in shapes[bad[0]])
      raise UserInputError(
          f"{dataset_flag}: image {paths[i]} is {shape[1]}x{shape[0]}x{shape[2]} (W x H x C), but "
          f"{paths[0]} is {first[1]}x{first[0]}x{first[2]}; all images must share one size and "
          f"channel count (resize them first)")
    out[start:start + len(shapes)] = flat.reshape(len(shapes), *first)
    start += len(shapes)
  return out


def _image_folder_cache_key(root: str, rel_paths: list[str]) -> str:
  digest = hashlib.sha256(f"{_CACHE_FORMAT}\n{root}\n".encode())
  for rel in rel_paths:
    st = os.stat(os.path.join(root, rel))
    digest.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:20]


def _read_image_folder(root: str, cache_dir: str | None, dataset_flag: str):
  """Reads (or loads from the .npz cache) an image folder: class names and per-split arrays."""
  train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
  if not os.path.isdir(root):
    raise UserInputError(f"{dataset_flag}: no such directory {root!r}; expected <root>/train/<class>/<image>")
  if not os.path.isdir(train_dir):
    raise UserInputError(f"{dataset_flag}: {root} has no train/ folder; expected "
                         f"<root>/train/<class>/<image> and optionally <root>/test/<class>/<image>")
  train_paths, train_y, classes = _list_image_folder_split(train_dir, None, root, dataset_flag)
  test = None
  if os.path.isdir(test_dir):
    test_paths, test_y, _ = _list_image_folder_split(test_dir, classes, root, dataset_flag)
    test = (test_paths, test_y)
  all_paths = train_paths + (test[0] if test else [])
  key = _image_folder_cache_key(root, all_paths)
  cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "rnascl_tf")
  base = os.path.basename(os.path.normpath(root)) or "root"
  cache_path = os.path.join(cache_dir, f"image_folder-{base}-{key}.npz")
  arrays = None
  if os.path.isfile(cache_path):
    try:
      with np.load(cache_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
      if len(arrays["train_x"]) != len(train_paths):
        arrays = None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
      arrays = None  # A damaged cache is rebuilt, not fatal.
  if arrays is None:
    arrays = {"train_x": _decode_image_list([os.path.join(root, p) for p in train_paths], dataset_flag),
              "train_y": train_y, "class_names": np.asarray(classes)}
    if test:
      arrays["test_x"] = _decode_image_list([os.path.join(root, p) for p in test[0]], dataset_flag)
      arrays["test_y"] = test[1]
      if arrays["test_x"].shape[1:] != arrays["train_x"].shape[1:]:
        raise UserInputError(f"{dataset_flag}: test images are {arrays['test_x'].shape[1:]} but train "
                             f"images are {arrays['train_x'].shape[1:]} (H, W, C); they must match")
    _write_npz_atomically(cache_path, arrays)
  return arrays


def _write_npz_atomically(path: str, arrays: dict) -> None:
  # Streams to a temp file beside `path` then renames: an interrupted run leaves no half cache,
  # and the arrays are not copied into one more in-memory buffer first.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _resize_array_uint8(x: np.ndarray, size: int) -> np.ndarray:
  out = np.empty((len(x), size, size, x.shape[-1]), np.uint8)
  for start in range(0, len(x), 1024):  # Chunks bound the float32 copy.
    out[start:start + 1024] = _resize_square_uint8(x[start:start + 1024], size).numpy()
  return out


def _load_image_folder(config: DataConfig, root: str) -> DataSplits:
  dataset_flag = f"--dataset={config.dataset}"
  root = os.path.abspath(os.path.expanduser(root))
  arrays = _read_image_folder(root, config.cache_dir, dataset_flag)
  x, y = arrays["train_x"], arrays["train_y"].astype(np.int32)
  classes = tuple(str(c) for c in arrays["class_names"])
  has_test = "test_x" in arrays
  if config.image_size and config.image_size != x.shape[1]:
    x = _resize_array_uint8(x, config.image_size)
  codes = assign_splits(len(y), config.seed, config.val_fraction, config.arch_fraction,
                        0.0 if has_test else config.test_fraction, config.max_train_examples,
                        None if has_test else config.max_test_examples)
  test = None
  if has_test:
    tx, ty = arrays["test_x"], arrays["test_y"].astype(np.int32)
    if config.image_size and config.image_size != tx.shape[1]:
      tx = _resize_array_uint8(tx, config.image_size)
    test = (tx, ty, assign_splits(len(ty), config.seed, 0.0, 0.0, 1.0, None,
                                  config.max_test_examples, salt=_TEST_SALT))
  sizes = _sizes_from_codes(codes, test[2] if test else np.zeros(0, np.int8))
  _check_sizes(config, sizes)
  mean, std = normalization_constants(x[np.isin(codes, _split_code_set("train_full"))])
  info = DatasetInfo(name=config.dataset, input_shape=tuple(int(d) for d in x.shape[1:]),
                     num_classes=len(classes), mean=mean, std=std, class_names=classes,
                     split_sizes=sizes)
  return DataSplits(info, config, _ArraySource(x, y, codes, test, seed=config.seed), flip=True)


# --- TFDS ---


def _missing_tfds_message(config: DataConfig, tfds_name: str) -> str:
  import tensorflow_datasets as tfds

  builder = tfds.builder(tfds_name, data_dir=config.data_dir)
  prepared_dir = str(builder.data_dir)
  data_root = config.data_dir or os.path.dirname(os.path.dirname(prepared_dir.rstrip("/")))
  if "/" in tfds_name:  # Config names add a level: <root>/<name>/<config>/<version>.
    data_root = config.data_dir or os.path.dirname(data_root)
  manual = os.path.join(data_root, "downloads", "manual")
  msg = (f"--dataset={config.dataset}: TFDS dataset {tfds_name!r} is not prepared under "
         f"--data_dir={data_root!r} and --download is off, so nothing was downloaded. Provide it in "
         f"one of two ways: (a) copy an already prepared copy to {prepared_dir}/, or (b) put the "
         f"original archive(s) in {manual}/ and run once with --download: TFDS then prepares the "
         f"dataset from those local files instead of fetching them.")
  if tfds_name.startswith("imagenet2012"):
    msg += (" ImageNet cannot be downloaded by TFDS: its manual dir must hold ILSVRC2012_img_train.tar "
            "and ILSVRC2012_img_val.tar (from https://image-net.org).")
  return msg


def _tfds_load(config: DataConfig, tfds_name: str, split: str, skip_decoding: bool, with_info=False):
  import tensorflow_datasets as tfds  # Local: a ~1 s import that digits and folders do not need.

  try:
    return tfds.load(tfds_name, split=split, data_dir=config.data_dir, download=config.download,
                     as_supervised=True, shuffle_files=False, with_info=with_info,
                     decoders={"image": tfds.decode.SkipDecoding()} if skip_decoding else None)
  except AssertionError as e:
    # TFDS signals "not prepared and download=False" with an AssertionError.
    if "could not find data" not in str(e) or config.download:
      raise
    raise UserInputError(_missing_tfds_message(config, tfds_name)) from e


def _cardinality(ds) -> int:
  n = int(ds.cardinality())
  if n >= 0:
    return n
  # Unknown cardinality (not seen with prepared TFDS data): count once, labels only.
  return int(ds.reduce(np.int64(0), lambda count, *_: count + 1))


def _load_tfds(config: DataConfig) -> DataSplits:
  name = config.dataset
  imagenet_like = name == "imagenet100" or name.startswith(IMAGENETTE_PREFIX)
  if name.startswith(IMAGENETTE_PREFIX):
    import tensorflow_datasets as tfds

    variants = [c.name for c in tfds.builder_cls("imagenette").BUILDER_CONFIGS]
    if name[len(IMAGENETTE_PREFIX):] not in variants:
      raise UserInputError(f"--dataset={name!r}: unknown Imagenette variant; valid: "
                           + ", ".join(IMAGENETTE_PREFIX + v for v in variants))
  tfds_name = "imagenet2012" if name == "imagenet100" else name
  test_split = "validation" if imagenet_like else "test"

  train_ds, tinfo = _tfds_load(config, tfds_name, "train", skip_decoding=True, with_info=True)
  test_ds = _tfds_load(config, tfds_name, test_split, skip_decoding=True)
  n_train, n_test = _cardinality(train_ds), _cardinality(test_ds)
  names = tuple(tinfo.features["label"].names)

  label_table, size_scale = None, 1.0
  max_train, max_test = config.max_train_examples, config.max_test_examples
  if name == "imagenet100":
    label_table = imagenet100_label_table()
    size_scale = len(IMAGENET100_CLASSES) / _IMAGENET_NUM_CLASSES
    names = tuple(names[c] for c in IMAGENET100_CLASSES)
    # Codes index the unfiltered stream: scale caps so that about that many survive the filter.
    max_train = None if max_train is None else int(np.ceil(max_train / size_scale))
    max_test = None if max_test is None else int(np.ceil(max_test / size_scale))
  elif name == "cifar10" and names == tuple(str(i) for i in range(10)):
    names = _CIFAR10_NAMES  # TFDS fills CIFAR-10's names only when preparing.

  train_codes = assign_splits(n_train, config.seed, config.val_fraction, config.arch_fraction,
                              0.0, max_train, None)
  test_codes = assign_splits(n_test, config.seed, 0.0, 0.0, 1.0, None, max_test, salt=_TEST_SALT)

  if imagenet_like:
    size = config.image_size or 64
    # Eval: shorter side to size * 8/7, centre crop `size` (ImageNet's 256 -> 224 ratio); training
    # with augmentation: the centre square at size * 8/7, then a random `size` crop + flip.
    outer = int(round(size * 8 / 7))
    preprocess = (lambda image, augmented:
                  _resize_shorter_center_crop(image, outer, outer if augmented else size))
    base_shape, aug_shape = (size, size, 3), (outer, outer, 3)
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
  else:
    size = config.image_size or 32

    def preprocess(image, augmented):
      del augmented
      return image if size == 32 else _resize_square_uint8(image, size)

    base_shape = aug_shape = (size, size, 3)
    mean, std = (_CIFAR10_MEAN, _CIFAR10_STD) if name == "cifar10" else (_CIFAR100_MEAN, _CIFAR100_STD)

  source = _TfdsSource(config, tfds_name, "train", test_split, train_codes, test_codes, preprocess,
                       base_shape, aug_shape, label_table, size_scale)
  sizes = {split: source.num_examples(split) for split in _CODES}
  _check_sizes(config, sizes)
  info = DatasetInfo(name=name, input_shape=base_shape, num_classes=len(names), mean=tuple(mean),
                     std=tuple(std), class_names=names, split_sizes=sizes)
  return DataSplits(info, config, source, flip=True)
