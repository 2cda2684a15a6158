"""Frozen run-level configs shared by the training stages (optimiser, run control, robust training).

Entry points build these from absl flags once (rnascl_tf/cli.py); library code only sees them.
"""

import dataclasses
from typing import Optional

from rnascl_tf.errors import UserInputError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
ROBUST_MODES = ("standard", "pgd", "trades", "fast_fgsm")


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
    verbose: Keras progress bar verbosity (1 = bar, 2 = one line per epoch, 0 = silent).
    sync_bn: synchronized BatchNorm in the networks being trained (batch statistics over all
      replicas: N replicas then train exactly like one device on the global batch).
    scale_lr_with_replicas: multiply the weight learning rate by the number of replicas in sync
      (linear scaling rule; the search's architecture learning rate is not scaled). Off: the
      learning rate is the one for the global batch (`batch_size` is always global).
  """
  model_dir: str
  epochs: int = 1
  steps_per_epoch: Optional[int] = None
  seed: int = 0
  strategy: str = "default"
  num_gpus: int = 0
  jit_compile: bool = False
  verbose: int = 1
  sync_bn: bool = False
  scale_lr_with_replicas: bool = False

  def __post_init__(self):
    if not self.model_dir:
      raise UserInputError("--model_dir is required (the run folder; re-using it resumes the run)")
    if self.epochs < 1:
      raise UserInputError(f"--epochs must be >= 1, got {self.epochs}")
    if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
      raise UserInputError(f"--steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
    if self.strategy not in STRATEGIES:
      raise UserInputError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")


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
  """
  mode: str = "pgd"
  eps: float = 8 / 255
  step_size: float = 2 / 255
  steps: int = 10
  trades_beta: float = 6.0
  val_attack_steps: int = 10
  val_examples: int = 1000

  def __post_init__(self):
    if self.mode not in ROBUST_MODES:
      raise UserInputError(f"--adv_mode must be one of {', '.join(ROBUST_MODES)}, got {self.mode!r}")
    if not 0 <= self.eps <= 1:
      raise UserInputError(f"--eps is in pixel units of [0, 1] images and must lie in [0, 1], got {self.eps}")
    if self.steps < 1 or self.val_attack_steps < 1:
      raise UserInputError("--attack_steps and --val_attack_steps must be >= 1")
