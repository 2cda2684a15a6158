"""Tests for rnascl_tf.data.splits: seeded split assignment."""

import numpy as np
import pytest

from rnascl_tf.data.splits import SPLIT_CODES, assign_splits


@pytest.mark.parametrize("n, val, arch, test, max_train, max_test, expected", [
    (1000, 0.1, 0.2, 0.0, None, None, {"weight": 700, "arch": 200, "val": 100, "test": 0}),
    (1000, 0.1, 0.2, 0.2, None, None, {"weight": 560, "arch": 160, "val": 80, "test": 200}),
    (1000, 0.1, 0.2, 0.2, 100, 30, {"weight": 70, "arch": 20, "val": 10, "test": 30}),
    (10, 0.01, 0.01, 0.0, None, None, {"weight": 8, "arch": 1, "val": 1, "test": 0}),
    (50, 0.0, 0.0, 1.0, None, 7, {"weight": 0, "arch": 0, "val": 0, "test": 7}),
])
def test_assign_splits_sizes_disjoint_deterministic(n, val, arch, test, max_train, max_test, expected):
  codes = assign_splits(n, 3, val, arch, test, max_train, max_test)
  assert codes.dtype == np.int8 and codes.shape == (n,)
  sizes = {s: int((codes == c).sum()) for s, c in SPLIT_CODES.items()}
  assert sizes == expected
  assert int((codes == -1).sum()) == n - sum(expected.values())  # One code per index: disjoint.
  np.testing.assert_array_equal(codes, assign_splits(n, 3, val, arch, test, max_train, max_test))
  other = assign_splits(n, 4, val, arch, test, max_train, max_test)
  assert not np.array_equal(codes, other)


def test_assign_splits_cap_is_subset_of_full_split():
  full = assign_splits(1000, 1, 0.1, 0.2)
  capped = assign_splits(1000, 1, 0.1, 0.2, max_train=100)
  used = capped >= 0
  # A capped run uses a subset of the same members, each in the same split.
  np.testing.assert_array_equal(capped[used], full[used])
