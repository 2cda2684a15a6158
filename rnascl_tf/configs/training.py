"""Configs of a training run: run control, optimiser, adversarial training, data."""

import dataclasses
import sys
from typing import Optional, Union

from rnascl_tf.configs.common import check_pixels
from rnascl_tf.errors import UserInputError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
ROBUST_MODES = ("standard", "pgd", "trades", "fast_fgsm")
MIXED_PRECISION = ("off", "bf16", "fp16")
VERBOSITIES = ("auto", 0, 1, 2)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimiser and learning-rate schedule for network weights.

  Args:
    optimizer: "sgd" (momentum 0.9, Nesterov off) or "adam".
    learning_rate: peak learning rate, for the global batch size.
    weight_decay: decoupled weight decay (Keras `weight_decay`).
    schedule: "cosine" (to 0 over all steps) or "constant".
    warmup_epochs: linear warm-up epochs before the schedule.
  """
  optimizer: str = "sgd"
  learning_rate: float = 0.1
  weight_decay: float = 5e-4
  schedule: str = "cosine"
  warmup_epochs: float = 0.0

  def __post_init__(self):
    if self.optimizer not in ("sgd", "adam"):
      raise UserInputError(f"--optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
    if self.schedule not in ("cosine", "constant"):
      raise UserInputError(f"--lr_schedule must be 'cosine' or 'constant', got {self.schedule!r}")
    if not self.learning_rate > 0:
      raise UserInputError(f"--learning_rate must be > 0, got {self.learning_rate}")
    if self.weight_decay < 0:
      raise UserInputError(f"--weight_decay must be >= 0, got {self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Run control: where artefacts go, how long, on which devices.

  Args:
    model_dir: run folder (checkpoints, TensorBoard, artefacts). Re-using it resumes the run.
    epochs: number of epochs.
    steps_per_epoch: optional cap on steps per epoch (quick runs); default: one pass over the split.
    seed: the run seed (data order, augmentation, Gumbel noise, attack random starts).
    strategy: one of STRATEGIES.
    num_gpus: GPUs for "mirrored" (0 = all visible).
    jit_compile: XLA for the train step (explicit: Keras would pick it by device otherwise).
    verbose: progress output: "auto" (a progress bar on a terminal, one line per epoch when stdout is
      a pipe or a file, where a bar would become one huge line), 1 = bar, 2 = one line per epoch,
      0 = silent; `keras_verbose()` resolves it.
    sync_bn: synchronized BatchNorm in the networks being trained (batch statistics over all
      replicas: N replicas then train exactly like one device on the global batch).
    scale_lr_with_replicas: multiply the weight learning rate by the number of replicas in sync
      (linear scaling rule; the search's architecture learning rate is not scaled). Off: the
      learning rate is the one for the global batch (`batch_size` is always global).
    mixed_precision: one of MIXED_PRECISION: "off" (float32), "bf16" or "fp16" (Keras mixed policies:
      float32 weights, reduced-precision compute; fp16 with dynamic loss scaling). BUILD.md, mixed precision.
  """
  model_dir: str
  epochs: int = 1
  steps_per_epoch: Optional[int] = None
  seed: int = 0
  strategy: str = "default"
  num_gpus: int = 0
  jit_compile: bool = False
  verbose: Union[int, str] = "auto"
  sync_bn: bool = False
  scale_lr_with_replicas: bool = False
  mixed_precision: str = "off"

  def __post_init__(self):
    if not self.model_dir:
      raise UserInputError("--model_dir is required (the run folder; re-using it resumes the run)")
    if self.epochs < 1:
      raise UserInputError(f"--epochs must be >= 1, got {self.epochs}")
    if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
      raise UserInputError(f"--steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
    if self.strategy not in STRATEGIES:
      raise UserInputError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
    if isinstance(self.verbose, bool) or self.verbose not in VERBOSITIES:
      raise UserInputError(f"--verbose must be auto, 0, 1 or 2, got {self.verbose!r}")
    if self.mixed_precision not in MIXED_PRECISION:
      raise UserInputError(f"--mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                           f"got {self.mixed_precision!r}")

  def keras_verbose(self) -> int:
    """The `verbose` of Keras' fit: "auto" is 1 (bar) on a terminal, 2 (one line per epoch) otherwise.

    >>> RunConfig("runs/a", verbose=0).keras_verbose(), RunConfig("runs/a", verbose=2).keras_verbose()
    (0, 2)
    """
    if self.verbose != "auto":
      return self.verbose
    return 1 if sys.stdout.isatty() else 2


@dataclasses.dataclass(frozen=True)
class RobustConfig:
  """Adversarial training of a network (pixel-space L-inf threat model).

  Args:
    mode: "standard" (clean CE), "pgd" (Madry PGD-AT), "trades" (TRADES) or "fast_fgsm" (FGSM with
      random start, Wong et al. 2020).
    eps: L-inf budget in pixels.
    step_size: PGD step in pixels.
    steps: PGD steps during training.
    trades_beta: TRADES' beta.
    val_attack_steps: PGD steps of the per-epoch validation attack (chooses the best checkpoint).
    val_examples: validation examples attacked each epoch (0 = the whole validation split).
    test_attack_steps: PGD steps of the final test-split evaluation.
  """
  mode: str = "pgd"
  eps: float = 8 / 255
  step_size: float = 2 / 255
  steps: int = 10
  trades_beta: float = 6.0
  val_attack_steps: int = 10
  val_examples: int = 1000
  test_attack_steps: int = 20

  def __post_init__(self):
    if self.mode not in ROBUST_MODES:
      raise UserInputError(f"--adv_mode must be one of {', '.join(ROBUST_MODES)}, got {self.mode!r}")
    check_pixels("--eps", self.eps)
    check_pixels("--step_size", self.step_size, positive=True)
    if self.trades_beta < 0:
      raise UserInputError(f"--trades_beta must be >= 0, got {self.trades_beta}")
    if self.steps < 1 or self.val_attack_steps < 1 or self.test_attack_steps < 1:
      raise UserInputError("--attack_steps, --val_attack_steps and --test_attack_steps must be >= 1")
    if self.val_examples < 0:
      raise UserInputError(f"--val_examples must be >= 0 (0 = the whole validation split), got {self.val_examples}")


IMAGENETTE_PREFIX = "imagenette/"
IMAGE_FOLDER_PREFIX = "image_folder:"
_DATASET_CHOICES = ("digits, cifar10, cifar100, imagenette/<variant> (e.g. imagenette/160px), "
                    "imagenet100, image_folder:<root>")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What to load and how to cut and feed it (built from flags by the entry points).

  Attributes:
    dataset: "digits" | "cifar10" | "cifar100" | "imagenette/<variant>" | "imagenet100" |
      "image_folder:<root>" (layout `<root>/train/<class>/<image>`, optional `<root>/test/...`).
    data_dir: TFDS data_dir (None: TFDS' default, ~/tensorflow_datasets).
    download: allow TFDS to download and prepare a missing dataset; otherwise fail fast.
    batch_size: global batch size (all replicas together).
    val_fraction: fraction of the training set held out for validation.
    arch_fraction: fraction of the training set used for architecture updates during search.
    test_fraction: fraction of all examples held out as test, only for datasets without a test split.
    image_size: side of the square images fed to models (None: the dataset's default).
    augment: random crop (+ horizontal flip except for digits) on training pipelines.
    seed: seeds split membership, shuffling and augmentation.
    max_train_examples: use only this many training examples (a seeded subset, cut proportionally
      into weight/arch/val) for quick runs.
    max_test_examples: use only this many test examples (a seeded subset).
    cache_dir: where image folders' decoded uint8 cache goes (None: ~/.cache/rnascl_tf).
  """
  dataset: str = "digits"
  data_dir: str | None = None
  download: bool = False
  batch_size: int = 128
  val_fraction: float = 0.1
  arch_fraction: float = 0.2
  test_fraction: float = 0.2
  image_size: int | None = None
  augment: bool = True
  seed: int = 0
  max_train_examples: int | None = None
  max_test_examples: int | None = None
  cache_dir: str | None = None

  def __post_init__(self):
    # Cheap checks only here (no file system, no TFDS), so a bad flag fails before anything loads.
    check_dataset_name(self.dataset)
    if not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise UserInputError(f"--batch_size must be an integer >= 1, got {self.batch_size!r}")
    for flag, value in (("--val_fraction", self.val_fraction), ("--arch_fraction", self.arch_fraction),
                        ("--test_fraction", self.test_fraction)):
      if not 0.0 <= value < 1.0:
        raise UserInputError(f"{flag} must be in [0, 1), got {value!r}")
    if self.val_fraction + self.arch_fraction >= 1.0:
      raise UserInputError(
          f"--val_fraction + --arch_fraction must be < 1 (the rest trains the weights), got "
          f"{self.val_fraction} + {self.arch_fraction} = {self.val_fraction + self.arch_fraction}")
    if self.image_size is not None and self.image_size < 4:
      raise UserInputError(f"--image_size must be >= 4 (or unset for the dataset's default), got {self.image_size!r}")
    for flag, value in (("--max_train_examples", self.max_train_examples),
                        ("--max_test_examples", self.max_test_examples)):
      if value is not None and value < 1:
        raise UserInputError(f"{flag} must be >= 1 (or unset for all examples), got {value!r}")


def check_dataset_name(name: str) -> None:
  ok = isinstance(name, str) and (
      name in ("digits", "cifar10", "cifar100", "imagenet100")
      or (name.startswith(IMAGENETTE_PREFIX) and len(name) > len(IMAGENETTE_PREFIX))
      or (name.startswith(IMAGE_FOLDER_PREFIX) and len(name) > len(IMAGE_FOLDER_PREFIX)))
  if not ok:
    raise UserInputError(f"--dataset={name!r} is not a known dataset; valid choices: {_DATASET_CHOICES}")
