"""Loading a dataset by its `--dataset` name into `DataSplits`: digits, image folders and TFDS."""

import os

import numpy as np
import tensorflow as tf

from rnascl_tf.configs import IMAGE_FOLDER_PREFIX, IMAGENETTE_PREFIX, DataConfig, check_dataset_name
from rnascl_tf.data import tfds as tfds_data
from rnascl_tf.data.image_folder import read_image_folder
from rnascl_tf.data.images import (normalization_constants, resize_array_uint8, resize_shorter_center_crop,
                                   resize_square_uint8)
from rnascl_tf.data.pipelines import DataSplits, DatasetInfo
from rnascl_tf.data.sources import ArraySource, TfdsSource
from rnascl_tf.data.splits import SPLIT_CODES, TEST_SALT, assign_splits, check_sizes, sizes_from_codes, split_codes


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


def _train_full_stats(x: np.ndarray, codes: np.ndarray):
  """Per-channel (mean, std) over train_full: the images the model trains on."""
  return normalization_constants(x[np.isin(codes, split_codes("train_full"))])


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
  sizes = sizes_from_codes(codes)
  check_sizes(config, sizes)
  mean, std = _train_full_stats(x, codes)
  info = DatasetInfo(name="digits", input_shape=(size, size, 1), num_classes=10, mean=mean, std=std,
                     class_names=tuple(str(i) for i in range(10)), split_sizes=sizes)
  # Mirrored digits are not digits: no horizontal flip.
  return DataSplits(info, config, ArraySource(x, y, codes, seed=config.seed), flip=False)


def _load_image_folder(config: DataConfig, root: str) -> DataSplits:
  dataset_flag = f"--dataset={config.dataset}"
  root = os.path.abspath(os.path.expanduser(root))
  arrays = read_image_folder(root, config.cache_dir, dataset_flag)
  x, y = arrays["train_x"], arrays["train_y"].astype(np.int32)
  classes = tuple(str(c) for c in arrays["class_names"])
  has_test = "test_x" in arrays
  if config.image_size and config.image_size != x.shape[1]:
    x = resize_array_uint8(x, config.image_size)
  codes = assign_splits(len(y), config.seed, config.val_fraction, config.arch_fraction,
                        0.0 if has_test else config.test_fraction, config.max_train_examples,
                        None if has_test else config.max_test_examples)
  test = None
  if has_test:
    tx, ty = arrays["test_x"], arrays["test_y"].astype(np.int32)
    if config.image_size and config.image_size != tx.shape[1]:
      tx = resize_array_uint8(tx, config.image_size)
    test = (tx, ty, assign_splits(len(ty), config.seed, 0.0, 0.0, 1.0, None,
                                  config.max_test_examples, salt=TEST_SALT))
  sizes = sizes_from_codes(codes, test[2] if test else np.zeros(0, np.int8))
  check_sizes(config, sizes)
  mean, std = _train_full_stats(x, codes)
  info = DatasetInfo(name=config.dataset, input_shape=tuple(int(d) for d in x.shape[1:]),
                     num_classes=len(classes), mean=mean, std=std, class_names=classes,
                     split_sizes=sizes)
  return DataSplits(info, config, ArraySource(x, y, codes, test, seed=config.seed), flip=True)


def _load_tfds(config: DataConfig) -> DataSplits:
  name = config.dataset
  imagenet_like = name == "imagenet100" or name.startswith(IMAGENETTE_PREFIX)
  if name.startswith(IMAGENETTE_PREFIX):
    tfds_data.check_imagenette_variant(name)
  tfds_name = "imagenet2012" if name == "imagenet100" else name
  test_split = "validation" if imagenet_like else "test"

  train_ds, tinfo = tfds_data.tfds_load(config, tfds_name, "train", skip_decoding=True, with_info=True)
  test_ds = tfds_data.tfds_load(config, tfds_name, test_split, skip_decoding=True)
  n_train, n_test = tfds_data.cardinality(train_ds), tfds_data.cardinality(test_ds)
  names = tuple(tinfo.features["label"].names)

  label_table, size_scale = None, 1.0
  max_train, max_test = config.max_train_examples, config.max_test_examples
  if name == "imagenet100":
    label_table = tfds_data.imagenet100_label_table()
    size_scale = len(tfds_data.IMAGENET100_CLASSES) / tfds_data.IMAGENET_NUM_CLASSES
    names = tuple(names[c] for c in tfds_data.IMAGENET100_CLASSES)
    # Codes index the unfiltered stream: scale caps so that about that many survive the filter.
    max_train = None if max_train is None else int(np.ceil(max_train / size_scale))
    max_test = None if max_test is None else int(np.ceil(max_test / size_scale))
  elif name == "cifar10" and names == tuple(str(i) for i in range(10)):
    names = tfds_data.CIFAR10_NAMES  # TFDS fills CIFAR-10's names only when preparing.

  train_codes = assign_splits(n_train, config.seed, config.val_fraction, config.arch_fraction,
                              0.0, max_train, None)
  test_codes = assign_splits(n_test, config.seed, 0.0, 0.0, 1.0, None, max_test, salt=TEST_SALT)

  if imagenet_like:
    size = config.image_size or 64
    # Eval: shorter side to size * 8/7, centre crop `size` (ImageNet's 256 -> 224 ratio); training
    # with augmentation: the centre square at size * 8/7, then a random `size` crop + flip.
    outer = int(round(size * 8 / 7))
    preprocess = (lambda image, augmented:
                  resize_shorter_center_crop(image, outer, outer if augmented else size))
    base_shape, aug_shape = (size, size, 3), (outer, outer, 3)
    mean, std = tfds_data.IMAGENET_MEAN, tfds_data.IMAGENET_STD
  else:
    size = config.image_size or 32

    def preprocess(image, augmented):
      del augmented
      return image if size == 32 else resize_square_uint8(image, size)

    base_shape = aug_shape = (size, size, 3)
    mean, std = ((tfds_data.CIFAR10_MEAN, tfds_data.CIFAR10_STD) if name == "cifar10"
                 else (tfds_data.CIFAR100_MEAN, tfds_data.CIFAR100_STD))

  source = TfdsSource(config, tfds_name, "train", test_split, train_codes, test_codes, preprocess,
                      base_shape, aug_shape, label_table, size_scale)
  sizes = {split: source.num_examples(split) for split in SPLIT_CODES}
  check_sizes(config, sizes)
  info = DatasetInfo(name=name, input_shape=base_shape, num_classes=len(names), mean=tuple(mean),
                     std=tuple(std), class_names=names, split_sizes=sizes)
  return DataSplits(info, config, source, flip=True)
