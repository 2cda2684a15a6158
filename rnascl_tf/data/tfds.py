"""TFDS access: loading a prepared split (never downloading by surprise), the ImageNet-100 class
table, and the constants of the TFDS datasets RNAS-CL uses.

`tensorflow_datasets` is imported inside the functions: a ~1 s import that digits and image
folders do not need.
"""

import os

import numpy as np
import tensorflow as tf

from rnascl_tf.configs import IMAGENETTE_PREFIX, DataConfig
from rnascl_tf.errors import UserInputError

# The paper's ImageNet-100: these 100 ImageNet-1k class indices (TFDS `imagenet2012` label ids), in
# this order, become labels 0..99. There is no TFDS builder for it; we filter `imagenet2012`.
IMAGENET100_CLASSES = (
    15, 45, 54, 57, 64, 74, 90, 99, 119, 120, 122, 131, 137, 151, 155, 157, 158, 166, 167, 169,
    176, 180, 209, 211, 222, 228, 234, 236, 242, 246, 267, 268, 272, 275, 277, 281, 299, 305, 313,
    317, 331, 342, 368, 374, 407, 421, 431, 449, 452, 455, 479, 494, 498, 503, 508, 544, 560, 570,
    592, 593, 599, 606, 608, 619, 620, 653, 659, 662, 665, 667, 674, 682, 703, 708, 717, 724, 748,
    758, 765, 766, 772, 775, 796, 798, 830, 854, 857, 858, 872, 876, 882, 904, 908, 936, 938, 953,
    959, 960, 993, 994)
IMAGENET_NUM_CLASSES = 1000

# Well-known per-channel constants of [0, 1] pixels (CIFAR: over the training set, as in DARTS).
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR100_MEAN = (0.50707516, 0.48654887, 0.44091784)
CIFAR100_STD = (0.26733429, 0.25643846, 0.27615047)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def imagenet100_label_table() -> np.ndarray:
  """Returns an int32 [1000] table: ImageNet-1k label -> ImageNet-100 label (0..99), or -1."""
  table = np.full(IMAGENET_NUM_CLASSES, -1, dtype=np.int32)
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


def check_imagenette_variant(dataset: str) -> None:
  """Fails with the valid choices when `dataset` (imagenette/<variant>) names no TFDS config.

  Raises:
    UserInputError: unknown variant.
  """
  import tensorflow_datasets as tfds

  variants = [c.name for c in tfds.builder_cls("imagenette").BUILDER_CONFIGS]
  if dataset[len(IMAGENETTE_PREFIX):] not in variants:
    raise UserInputError(f"--dataset={dataset!r}: unknown Imagenette variant; valid: "
                         + ", ".join(IMAGENETTE_PREFIX + v for v in variants))


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


def tfds_load(config: DataConfig, tfds_name: str, split: str, skip_decoding: bool, with_info: bool = False):
  """Loads one TFDS split as (image, label) pairs in file order.

  Args:
    config: the data configuration (`data_dir`, `download`, `dataset` for messages).
    tfds_name: the TFDS builder name, e.g. "cifar10" or "imagenette/160px".
    split: the TFDS split, e.g. "train".
    skip_decoding: yield encoded image bytes (decoded later, after filtering).
    with_info: also return the TFDS `DatasetInfo`.

  Returns:
    The dataset, or (dataset, info) with `with_info`.

  Raises:
    UserInputError: the dataset is not prepared and `config.download` is off.
  """
  import tensorflow_datasets as tfds

  try:
    return tfds.load(tfds_name, split=split, data_dir=config.data_dir, download=config.download,
                     as_supervised=True, shuffle_files=False, with_info=with_info,
                     decoders={"image": tfds.decode.SkipDecoding()} if skip_decoding else None)
  except AssertionError as e:
    # TFDS signals "not prepared and download=False" with an AssertionError.
    if "could not find data" not in str(e) or config.download:
      raise
    raise UserInputError(_missing_tfds_message(config, tfds_name)) from e


def cardinality(ds: tf.data.Dataset) -> int:
  """Returns the number of elements of `ds`, counting them once if TF does not know it."""
  n = int(ds.cardinality())
  if n >= 0:
    return n
  # Unknown cardinality (not seen with prepared TFDS data): count once, labels only.
  return int(ds.reduce(np.int64(0), lambda count, *_: count + 1))
