"""Sources: where a split's un-augmented examples come from, behind one `Source` protocol.

`ArraySource` holds arrays in memory (digits, image folders); `TfdsSource` streams TFDS files and
selects each split with enumerate + filter on the split codes (CIFAR, Imagenette, ImageNet-100).
The pipelines in `pipelines.py` only use the protocol.
"""

from typing import Callable, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

from rnascl_tf.configs import DataConfig
from rnascl_tf.data.splits import TEST_SALT, hash_order, split_codes
from rnascl_tf.data.tfds import tfds_load

# A split's decoded stream is cached in memory only below this size; ImageNet-100 is re-read.
_CACHE_LIMIT_BYTES = 1 << 30


@runtime_checkable
class Source(Protocol):
  """What the pipelines need from a dataset's storage.

  Attributes:
    aug_margin: how many pixels larger (per side length) the augmented base images are than the
      eval ones; 0 means augmentation pads instead of cropping a larger image.
    fits_in_memory: whether `arrays("train_full")` fits in host memory (the rotating search
      keeps it there).
  """

  aug_margin: int
  fits_in_memory: bool

  def num_examples(self, split: str) -> int:
    """Returns the number of examples of `split` (an estimate for label-filtered streams)."""

  def arrays(self, split: str, augmented: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Returns (x [N, H, W, C], y int32 [N]) of `split`, in the order `base` yields them."""

  def base(self, split: str, augmented: bool = False) -> tuple[tf.data.Dataset, Callable | None]:
    """Returns the un-augmented, unbatched examples of `split`.

    Args:
      split: one of "weight", "arch", "val", "test", "train_full".
      augmented: the base of augmented training (a larger image to crop from if `aug_margin`).

    Returns:
      (ds, gather): `ds` yields (image, label) pairs when `gather` is None; otherwise it yields
      example indices and `gather` (mapped after shuffling) turns an index into (image, label).
    """

  def cacheable(self, split: str, augmented: bool = False) -> bool:
    """Whether the pipeline should cache `base(split, augmented)` in memory after one pass."""


class ArraySource:
  """Examples held in memory: a pool cut by codes, and optionally a separate test set.

  Each split's members come in the seeded hash order of `assign_splits` (pool: salt 0, separate
  test set: `TEST_SALT`), not in the arrays' order: an image folder is read class by class, and in
  source order "the first 300 test images" or "the first 500 validation images" would be three or
  five classes only. With the hash order the first N members of a split are the members a cap of N
  would have kept, a seeded random subset.
  """

  def __init__(self, x: np.ndarray, y: np.ndarray, codes: np.ndarray, test=None, seed: int = 0):
    """Keeps the arrays.

    Args:
      x: images [N, H, W, C] of the pool.
      y: int32 labels [N] of the pool.
      codes: the pool's split codes from `assign_splits` (salt 0).
      test: (x, y, codes) of a separate test set (codes with `TEST_SALT`), or None: then test
        comes from the pool.
      seed: the data seed the codes were assigned with.
    """
    self._x, self._y, self._codes = x, y, codes
    self._test = test
    # The permutations assign_splits cut the splits from, computed once (every pipeline asks).
    self._order = {"pool": hash_order(len(codes), seed, 0)}
    if test is not None:
      self._order["test"] = hash_order(len(test[2]), seed, TEST_SALT)
    self._tensors = {}
    self.aug_margin = 0  # The augmented base is the same image as the eval one.
    self.fits_in_memory = True

  def _key(self, split):
    return "test" if (split == "test" and self._test is not None) else "pool"

  def _arrays_and_codes(self, split):
    return self._test if self._key(split) == "test" else (self._x, self._y, self._codes)

  def _indices(self, split):
    _, _, codes = self._arrays_and_codes(split)
    order = self._order[self._key(split)]
    return order[np.isin(codes[order], split_codes(split))]

  def num_examples(self, split: str) -> int:
    return int(len(self._indices(split)))

  def arrays(self, split: str, augmented: bool = False):
    del augmented
    x, y, _ = self._arrays_and_codes(split)
    idx = self._indices(split)
    return x[idx], y[idx]

  def base(self, split: str, augmented: bool = False):
    del augmented
    x, y, _ = self._arrays_and_codes(split)
    key = self._key(split)
    if key not in self._tensors:
      # One tensor copy per array, shared by every pipeline; pipelines only gather indices.
      self._tensors[key] = (tf.constant(x), tf.constant(y))
    x_t, y_t = self._tensors[key]
    idx = tf.data.Dataset.from_tensor_slices(self._indices(split).astype(np.int64))
    # Indices are shuffled before this gather runs, so the shuffle buffer holds ints, not images.
    return idx, lambda i: (tf.gather(x_t, i), tf.gather(y_t, i))

  def cacheable(self, split: str, augmented: bool = False) -> bool:
    del split, augmented
    return False  # Already in memory.


class TfdsSource:
  """Examples streamed from TFDS, selected by enumerate + filter on the split codes."""

  def __init__(self, config: DataConfig, tfds_name: str, train_split: str, test_split: str,
               train_codes: np.ndarray, test_codes: np.ndarray, preprocess: Callable,
               base_shape: tuple[int, int, int], aug_shape: tuple[int, int, int],
               label_table: np.ndarray | None = None, size_scale: float = 1.0):
    """Keeps what the streams are built from.

    Args:
      config: the data configuration (for `tfds_load`).
      tfds_name: the TFDS builder name.
      train_split: the TFDS split weight, arch and val are cut from.
      test_split: the TFDS split that is `test`.
      train_codes: split codes of `train_split`, by file order.
      test_codes: split codes of `test_split`, by file order.
      preprocess: (uint8 image, augmented: bool) -> uint8 image of `aug_shape` if augmented else
        `base_shape`.
      base_shape: (H, W, C) of eval images.
      aug_shape: (H, W, C) of the images augmentation crops from.
      label_table: int32 raw label -> label, -1 drops the example (ImageNet-100), or None.
      size_scale: fraction of raw examples the label filter keeps (an estimate).
    """
    self._config = config
    self._name = tfds_name
    self._raw = {"train": train_split, "test": test_split}
    self._codes = {"train": train_codes, "test": test_codes}
    self._preprocess = preprocess
    self._base_shape, self._aug_shape = base_shape, aug_shape
    self._label_table = label_table
    self._size_scale = size_scale
    self.aug_margin = aug_shape[0] - base_shape[0]
    self.fits_in_memory = label_table is None  # ImageNet-100 does not.

  def _side(self, split):
    return "test" if split == "test" else "train"

  def num_examples(self, split: str) -> int:
    codes = self._codes[self._side(split)]
    n = int(np.isin(codes, split_codes(split)).sum())
    return int(round(n * self._size_scale)) if self._label_table is not None else n

  def base(self, split: str, augmented: bool = False):
    side = self._side(split)
    codes_t = tf.constant(self._codes[side])
    wanted = tf.constant(split_codes(split), tf.int8)
    ds = tfds_load(self._config, self._name, self._raw[side], skip_decoding=True)
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

  def arrays(self, split: str, augmented: bool = False):
    xs, ys = [], []
    ds, _ = self.base(split, augmented)
    for x, y in ds.batch(512).as_numpy_iterator():
      xs.append(x)
      ys.append(y)
    shape = self._aug_shape if augmented else self._base_shape
    if not xs:
      return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int32)

  def cacheable(self, split: str, augmented: bool = False) -> bool:
    shape = self._aug_shape if augmented else self._base_shape
    return self.num_examples(split) * int(np.prod(shape)) <= _CACHE_LIMIT_BYTES
