"""Datasets and tf.data input pipelines for RNAS-CL.

`load_splits(DataConfig)` loads a `--dataset` (digits, CIFAR, Imagenette, ImageNet-100 or an image
folder) and returns `DataSplits`: the weight / arch / val / test / train_full splits and their
seeded, augmented pipelines, plus the `DatasetInfo` a model is built for.
"""

from rnascl_tf.data.loading import load_splits
from rnascl_tf.data.pipelines import DataSplits, DatasetInfo
from rnascl_tf.data.splits import SPLITS

__all__ = ["DataSplits", "DatasetInfo", "SPLITS", "load_splits"]
