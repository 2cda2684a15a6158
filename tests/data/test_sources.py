"""Tests for rnascl_tf.data.sources: both sources satisfy the one `Source` protocol alike."""

import inspect

import numpy as np
import tensorflow as tf

from rnascl_tf.configs import DataConfig
from rnascl_tf.data import SPLITS, load_splits
from rnascl_tf.data.sources import ArraySource, Source, TfdsSource

_METHODS = ("num_examples", "arrays", "base", "cacheable")


def _check_source(splits):
  """Checks the protocol on a loaded dataset's source; returns its first base element's spec."""
  source = splits.source
  assert isinstance(source, Source)
  for method in _METHODS:  # Same parameter names, kinds and defaults as the protocol.
    params = inspect.signature(getattr(type(source), method)).parameters.values()
    expected = inspect.signature(getattr(Source, method)).parameters.values()
    assert [(p.name, p.kind, p.default) for p in params] == [(p.name, p.kind, p.default) for p in expected], method
  assert isinstance(source.aug_margin, int) and isinstance(source.fits_in_memory, bool)
  shape = splits.info.input_shape
  for split in SPLITS:
    n = source.num_examples(split)
    x, y = source.arrays(split)
    assert x.shape == (n, *shape) and y.shape == (n,) and y.dtype == np.int32
    ds, gather = source.base(split)
    element = _first(ds)
    image, label = gather(element) if gather is not None else element
    assert tuple(image.shape) == shape and label.shape == () and label.dtype == tf.int32
    np.testing.assert_array_equal(image.numpy(), x[0])  # base() and arrays() share one order.
    assert int(label) == y[0]
    assert isinstance(source.cacheable(split), bool)
  return image.dtype


def _first(ds):
  return next(iter(ds))


def test_array_and_tfds_sources_satisfy_one_protocol(digits, tmp_path):
  import tensorflow_datasets as tfds

  assert isinstance(digits.source, ArraySource)
  assert _check_source(digits) == tf.float32
  assert digits.source.fits_in_memory and digits.source.aug_margin == 0
  with tfds.testing.mock_data(num_examples=40):
    cifar = load_splits(DataConfig(dataset="cifar10", data_dir=str(tmp_path), batch_size=8))
    assert isinstance(cifar.source, TfdsSource)
    assert _check_source(cifar) == tf.uint8
  assert cifar.source.fits_in_memory and cifar.source.aug_margin == 0
