"""The tf.data input pipelines of a loaded dataset: `DataSplits` and its static `DatasetInfo`.

Every dataset is cut into the splits the method needs: `weight` (network weights during search),
`arch` (architecture and tutor logits during search) and `val`, all carved out of the training set,
plus `test`. `train_full` = weight + arch is what a teacher or a final network trains on. Pipelines
yield float32 images in [0, 1] and int32 labels; models normalise inside, using the per-channel
constants in `DatasetInfo`. Shuffling and augmentation are seeded and replay exactly on resume.
Examples are gathered, augmented and converted a whole batch at a time (`augment_batch`): one
example at a time cost four to eight times as much CPU (scripts/bench_input.py).
"""

import dataclasses
import zlib

import tensorflow as tf

from rnascl_tf.configs import DataConfig
from rnascl_tf.data.images import to_float01
from rnascl_tf.data.sources import Source
from rnascl_tf.data.splits import split_codes
from rnascl_tf.errors import UserInputError

# Shuffle buffer of streams too big to cache (ImageNet-100; TFDS shuffled its files on writing).
_STREAM_SHUFFLE_BUFFER = 10_000


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


def augment_fn(size: int, channels: int, pad: int, flip: bool, salt: int):
  """Returns a map fn ((image, label), r) -> (float image, label): pad, random crop, random flip.

  `r` is a per-element int64 from `tf.data.Dataset.random`, so the stateless ops differ per element
  and per epoch yet replay exactly for one seed.
  """

  def fn(example, r):
    image, label = example
    image = to_float01(image)
    seeds = tf.random.experimental.stateless_split(tf.stack([r, tf.constant(salt, tf.int64)]), 2)
    if pad:
      # Zero padding as in the DARTS / RNAS-CL PyTorch code (RandomCrop(32, padding=4)).
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size, size, channels], seed=seeds[0])
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image, label

  return fn


def augment_batch(images, labels, r, size: int, pad: int, flip: bool):
  """Pads, randomly crops and maybe flips a whole batch with a handful of vectorised ops.

  The distribution of `augment_fn`: each example's crop offsets are uniform over the (padded) image
  and its flip has probability 1/2 (if `flip`), all taken from the example's own draw `r`, so a
  batch replays exactly for one seed and the draws skip per example on resume. Cropping is two
  batched gathers of the uint8 pixels; the float conversion comes last, on the cropped images.

  Args:
    images: [B, H, W, C] uint8 or [0, 1] float, H and W static and at least `size - 2 * pad`.
    labels: [B] labels, passed through.
    r: int64 [B], one `tf.data.Dataset.random` draw per example (uniform over 32 bits).
    size: side of the output crops.
    pad: zero padding added on each side before cropping.
    flip: whether to mirror left-right with probability 1/2.

  Returns:
    (float32 images [B, size, size, C] in [0, 1], labels).
  """
  if pad:
    # Zero padding as in the DARTS / RNAS-CL PyTorch code (RandomCrop(32, padding=4)).
    images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  n_rows, n_cols = images.shape[1] - size + 1, images.shape[2] - size + 1
  # One draw split into offsets and flip; 2^32 values modulo a few hundred: the bias is < 1e-7.
  r = tf.math.floormod(r, n_rows * n_cols * (2 if flip else 1))
  offsets = tf.range(size, dtype=tf.int64)[None]
  rows = r[:, None] % n_rows + offsets
  cols = offsets
  if flip:
    cols = tf.where(r[:, None] >= n_rows * n_cols, size - 1 - offsets, offsets)
  cols = (r[:, None] // n_rows) % n_cols + cols
  images = tf.gather(images, rows, axis=1, batch_dims=1)
  return to_float01(tf.gather(images, cols, axis=2, batch_dims=1)), labels


def _float_pair(x, y):
  return to_float01(x), y


def _derived_seed(seed: int, *parts: str) -> int:
  return zlib.crc32("/".join([str(seed), *parts]).encode()) & 0x7FFFFFFF


class DataSplits:
  """The splits of one dataset and their tf.data pipelines.

  Attributes:
    info: the `DatasetInfo`.
    config: the `DataConfig` it was loaded with.
    source: the `Source` the examples come from.
    augment_per_image: build the previous pipeline, which gathered, augmented (`augment_fn`) and
      converted one example at a time; kept as the baseline of scripts/bench_input.py.
  """

  augment_per_image = False

  def __init__(self, info: DatasetInfo, config: DataConfig, source: Source, flip: bool):
    """Wraps a loaded source.

    Args:
      info: the dataset's static facts (its `split_sizes` set the steps per epoch).
      config: the data configuration it was loaded with.
      source: where the examples come from.
      flip: whether augmentation flips images left-right (not for digits).
    """
    self.info = info
    self.config = config
    self.source = source
    self._flip = flip

  def _size(self, split):
    if split == "train_full":
      return self.info.split_sizes["weight"] + self.info.split_sizes["arch"]
    split_codes(split)  # Names the valid splits for an unknown one.
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
    split_codes(split)  # Names the valid splits for an unknown one.
    return self.source.arrays(split, augmented=False)

  def _finish(self, ds, gather, split, training, augmented, cache, repeat, batch_size,
              drop_remainder, shuffle_buffer, skip_examples=0):
    """Shared tail: cache, shuffle, repeat, skip, then batch + gather + augment or convert, prefetch."""
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
    h, _, c = self.info.input_shape
    pad = 0 if self.source.aug_margin else max(1, h // 8)
    # One uniform draw per example, skipped like the examples: the crops replay exactly on resume.
    draws = tf.data.Dataset.random(seed=_derived_seed(self.config.seed, "augment", split),
                                   rerandomize_each_iteration=True).skip(skip_examples)
    if self.augment_per_image:
      if gather is not None:
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
      if augmented:
        ds = tf.data.Dataset.zip((ds, draws)).map(
            augment_fn(h, c, pad, self._flip, _derived_seed(self.config.seed, "salt", split)),
            num_parallel_calls=tf.data.AUTOTUNE)
      else:
        ds = ds.map(_float_pair, num_parallel_calls=tf.data.AUTOTUNE)
      ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
      load = gather or (lambda example: example)
      if augmented:
        ds = tf.data.Dataset.zip((ds, draws))
        fn = lambda example, r: augment_batch(*load(example), r, h, pad, self._flip)
      else:
        fn = (lambda i: _float_pair(*gather(i))) if gather is not None else _float_pair
      ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
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
    cache = self.source.cacheable(split, augmented)
    ds, gather = self.source.base(split, augmented)
    # A whole-split shuffle buffer is cheap when it holds indices (gathered after the shuffle) or
    # cached examples; a stream of decoded images gets a bounded one.
    buffer = n if (cache or gather is not None) else min(n, _STREAM_SHUFFLE_BUFFER)
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
    if not self.source.fits_in_memory:
      raise UserInputError(f"search_dataset(rotating=True) keeps train_full in memory, which "
                           f"--dataset={self.config.dataset} does not fit; use the fixed weight/arch split")
    augmented = self.config.augment
    x, y = self.source.arrays("train_full", augmented=augmented)
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
