"""Split membership: which examples of a dataset belong to weight, arch, val and test.

Membership comes from one seeded hash of each example's index (`assign_splits`), so it is
deterministic given the seed, independent of the batch size, and works the same for arrays in
memory (`x[codes == c]`) and for TFDS streams read with enumerate + filter on the codes.
"""

import numpy as np

from rnascl_tf.configs import DataConfig
from rnascl_tf.errors import UserInputError

SPLITS = ("weight", "arch", "val", "test", "train_full")
# The int8 code each example gets for its split; `train_full` is weight + arch, not a code of its own.
SPLIT_CODES = {"weight": 0, "arch": 1, "val": 2, "test": 3}
UNUSED = -1
# assign_splits salt of a dataset's own test split (the training pool uses 0), so that its order is
# not the pool's under the same seed.
TEST_SALT = 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser on a uint64 array (wraps mod 2**64; stable across NumPy versions)."""
  x = x.astype(np.uint64, copy=True)
  x += np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def hash_order(num_examples: int, seed: int, salt: int) -> np.ndarray:
  """A seeded permutation of range(num_examples): indices sorted by a hash of (seed, salt, index).

  Args:
    num_examples: length of the permutation.
    seed: the data seed.
    salt: decorrelates different sources under one seed (`TEST_SALT` for a separate test set).

  Returns:
    int64 array [num_examples], the permutation `assign_splits` cuts the splits from.
  """
  key = _splitmix64(np.array([(seed * 1_000_003 + salt) % (1 << 64)], dtype=np.uint64))
  hashes = _splitmix64(np.arange(num_examples, dtype=np.uint64) ^ key)
  return np.argsort(hashes, kind="stable")


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
  order = hash_order(num_examples, seed, salt)
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
  codes = np.full(num_examples, UNUSED, dtype=np.int8)
  start = 0
  for split, size in (("test", n_test), ("val", n_val), ("arch", n_arch), ("weight", n_weight)):
    codes[order[start:start + keep[split]]] = SPLIT_CODES[split]
    start += size
  return codes


def split_codes(split: str) -> tuple[int, ...]:
  """Returns the codes whose examples make up `split` (two for train_full).

  Raises:
    UserInputError: `split` is not one of `SPLITS`.
  """
  if split == "train_full":
    return (SPLIT_CODES["weight"], SPLIT_CODES["arch"])
  if split not in SPLIT_CODES:
    raise UserInputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
  return (SPLIT_CODES[split],)


def sizes_from_codes(*code_arrays: np.ndarray) -> dict:
  """Returns {"weight": n, "arch": n, "val": n, "test": n} over all the given code arrays."""
  codes = np.concatenate(code_arrays)
  return {split: int((codes == code).sum()) for split, code in SPLIT_CODES.items()}


def check_sizes(config: DataConfig, sizes: dict) -> None:
  """Fails with the flags to change when the weight or the test split came out empty.

  Args:
    config: the data configuration the sizes were cut with.
    sizes: {"weight": n, "arch": n, "val": n, "test": n}.

  Raises:
    UserInputError: the weight or the test split is empty.
  """
  if sizes["weight"] < 1:
    raise UserInputError(
        f"--dataset={config.dataset}: no training examples are left for the weight split "
        f"(sizes {sizes}); lower --val_fraction/--arch_fraction or raise --max_train_examples")
  if sizes["test"] < 1:
    raise UserInputError(f"--dataset={config.dataset}: the test split is empty (sizes {sizes}); "
                         f"raise --test_fraction or --max_test_examples")
