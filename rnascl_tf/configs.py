"""Every frozen config of the product, TensorFlow-free and validated once, in its constructor.

Entry points build these from their parsed flags (`rnascl_tf.cli`); the Python API takes them
directly (`rnascl_tf.api`). Library code only sees configs, never flags. A bad value raises a
`UserInputError` that names the flag, so the entry points can refuse it before any work starts.
Run fingerprints (what a resumed run must share) are `fingerprint(...)` of these configs.
"""

import dataclasses
import math
from typing import Optional, Sequence

from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.attack_specs import AttackConfig, parse_attack

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
ROBUST_MODES = ("standard", "pgd", "trades", "fast_fgsm")

def check_pixels(flag: str, value, positive: bool = False) -> float:
  """The one rule for pixel budgets: a finite number in [0, 1] (> 0 with `positive`)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise UserInputError(f"{flag} must be a finite number in pixel units (e.g. 8/255), got {value!r}")
  if not 0.0 <= value <= 1.0 or (positive and value == 0):
    bound = "(0, 1]" if positive else "[0, 1]"
    raise UserInputError(f"{flag} is in pixel units of [0, 1] images and must lie in {bound}, got {value!r}")
  return float(value)


def fingerprint(*configs, exclude: Sequence[str] = ()) -> dict:
  """The settings a resumed run must share: every field of `configs` except `exclude`.

  Args:
    *configs: (name, config) pairs; a config is a dataclass (or None, recorded as None).
    exclude: "name.field" entries that may change between runs (epochs, verbosity, paths...).

  Returns:
    A JSON-ready dict {"name.field": value}.
  """
  out = {}
  for name, cfg in configs:
    items = dataclasses.asdict(cfg).items() if cfg is not None else ()
    for key, value in items:
      full = f"{name}.{key}"
      if full not in exclude:
        out[full] = list(value) if isinstance(value, tuple) else value
  return out


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
    check_pixels("--eps", self.eps)
    check_pixels("--step_size", self.step_size, positive=True)
    if self.trades_beta < 0:
      raise UserInputError(f"--trades_beta must be >= 0, got {self.trades_beta}")
    if self.steps < 1 or self.val_attack_steps < 1:
      raise UserInputError("--attack_steps and --val_attack_steps must be >= 1")


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


AUTOATTACK_MODES = ("none", "standard", "fast")
DEFAULT_ATTACKS = ("fgsm", "pgd20", "mifgsm20", "cw20")
DEFAULT_SWEEP = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
RESOURCE_FORMS = ("fbnet", "budget", "none")


@dataclasses.dataclass(frozen=True)
class ArtBudget:
  """Iterations and queries of the ART attacks.

  Attributes:
    apgd_iter: iterations of APGD-CE and of each APGD-T target run.
    apgd_restarts: random starts of APGD-CE and of each APGD-T target run.
    apgd_targets: target classes of APGD-T (the 2nd..(n+1)-th highest clean logits, as AutoAttack).
    square_queries: Square iterations (one model query per example each).
    square_p_init: Square's initial fraction of changed pixels.
    square_restarts: Square restarts.
  """
  apgd_iter: int
  apgd_restarts: int
  apgd_targets: int
  square_queries: int
  square_p_init: float = 0.8
  square_restarts: int = 1

  def __post_init__(self):
    for field in ("apgd_iter", "apgd_restarts", "apgd_targets", "square_queries", "square_restarts"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"ART budget: {field}={value!r}, expected an integer >= 1")
    if not 0.0 < self.square_p_init <= 1.0:
      raise UserInputError(f"ART budget: square_p_init={self.square_p_init!r}, expected a number in (0, 1]")


# AutoAttack's "standard" version (Croce & Hein 2020): APGD-CE 100 iterations 1 restart, APGD-T 100
# iterations on 9 target classes 1 restart each, FAB-T (not in ART, not run), Square 5000 queries.
STANDARD_BUDGET = ArtBudget(apgd_iter=100, apgd_restarts=1, apgd_targets=9, square_queries=5000)
# About 8x cheaper than standard: half the APGD iterations, 3 targets, a fifth of Square's queries.
FAST_BUDGET = ArtBudget(apgd_iter=50, apgd_restarts=1, apgd_targets=3, square_queries=1000)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What to evaluate (`rnascl_tf.evaluate`). Budgets in [0, 1] pixel units.

  Attributes:
    eps: L-inf budget of every attack (except the sweep).
    step_size: step of the iterative cleverhans attacks at `eps`.
    attacks: attack specs for `attacks.parse_attack` ("fgsm", "pgd20", "pgd20x5", "mifgsm20", "cw20").
    eps_sweep: budgets of the PGD sweep (eps = 0 is always added: it is the first sanity check). The
      sweep attack is the first "pgd" of `attacks` (PGD-20 if none), with its step scaled to
      step_size * e / eps so it keeps its shape; at e = eps it is the main PGD itself.
    autoattack: "none", "standard" (ART APGD-CE, APGD-T, Square at AutoAttack's standard settings;
      FAB-T is not in ART, so it is not full AutoAttack) or "fast" (`FAST_BUDGET`).
    blackbox_queries: queries of the black-box Square run for the gradient-masking check when
      `autoattack` is "none" (its own Square serves otherwise); 0 skips the check.
    num_examples: evaluate only the first this many test examples (None: all).
    seed: seeds TF, NumPy and Python (random starts, ART's random search).
    art_budget: overrides the budget of `autoattack` (tests and experiments); such runs are labelled
      "custom budget".
  """
  eps: float = 8 / 255
  step_size: float = 2 / 255
  attacks: tuple = DEFAULT_ATTACKS
  eps_sweep: tuple = DEFAULT_SWEEP
  autoattack: str = "none"
  blackbox_queries: int = 1000
  num_examples: Optional[int] = None
  seed: int = 0
  art_budget: Optional[ArtBudget] = None

  def __post_init__(self):
    check_pixels("--eps", self.eps)
    check_pixels("--step_size", self.step_size, positive=True)
    if isinstance(self.attacks, str) or not self.attacks:
      raise UserInputError(f"--attacks must be a non-empty comma-separated list such as "
                           f"{','.join(DEFAULT_ATTACKS)}, got {self.attacks!r}")
    self.attack_configs()  # Raises a UserInputError naming --attacks for a bad spec or a duplicate.
    for e in self.eps_sweep:
      check_pixels("--eps_sweep", e)
    if self.autoattack not in AUTOATTACK_MODES:
      raise UserInputError(f"--autoattack must be one of {', '.join(AUTOATTACK_MODES)}, got {self.autoattack!r}")
    if isinstance(self.blackbox_queries, bool) or not isinstance(self.blackbox_queries, int) or self.blackbox_queries < 0:
      raise UserInputError(f"--blackbox_queries must be an integer >= 0 (0 skips the black-box check), "
                           f"got {self.blackbox_queries!r}")
    if self.num_examples is not None and (not isinstance(self.num_examples, int) or self.num_examples < 1):
      raise UserInputError(f"--num_examples must be an integer >= 1 (or unset for the whole test split), "
                           f"got {self.num_examples!r}")

  def attack_configs(self) -> list:
    """The white-box attacks at `eps`, in `attacks` order."""
    configs = []
    for spec in self.attacks:
      try:
        configs.append(parse_attack(spec, self.eps, self.step_size))
      except UserInputError as e:
        raise UserInputError(f"--attacks: {e}") from None
    labels = [c.label() for c in configs]
    if len(set(labels)) != len(labels):
      raise UserInputError(f"--attacks lists the same attack twice: {list(self.attacks)}")
    return configs

  def sweep_configs(self) -> list:
    """The PGD sweep, one config per distinct budget in increasing order, eps = 0 included."""
    pgd = next((c for c in self.attack_configs() if c.name == "pgd"), None)
    steps, restarts = (pgd.steps, pgd.restarts) if pgd else (20, 1)
    out = []
    for e in sorted(set(float(v) for v in self.eps_sweep) | {0.0}):
      if e == self.eps or self.eps == 0 or e == 0:
        step = self.step_size  # At eps itself: exactly the main PGD. At 0 the step is unused.
      else:
        step = self.step_size * e / self.eps
      out.append(AttackConfig("pgd", eps=e, step_size=step, steps=steps, restarts=restarts))
    return out

  def budget(self) -> Optional[ArtBudget]:
    """The ART budget of `autoattack` (None for "none")."""
    if self.autoattack == "none":
      return None
    return self.art_budget or {"standard": STANDARD_BUDGET, "fast": FAST_BUDGET}[self.autoattack]


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """The distillation terms, shared by the search and the retraining (defined once, here).

  Args:
    lambda_kd: weight of the KL(teacher || student) term (0 switches it off).
    kd_temperature: its temperature T (> 0; the term is multiplied by T^2).
    gamma_cl: weight of the cross-layer attention loss (0 switches it off).
    cl_grid: attention maps are resized to cl_grid x cl_grid.
    tutor_map: retraining only: per student layer, the index of its teacher layer (teacher taps'
      order). The search learns the map instead.
  """
  lambda_kd: float = 1.0
  kd_temperature: float = 1.0
  gamma_cl: float = 1.0
  cl_grid: int = 8
  tutor_map: Optional[Sequence[int]] = None

  def __post_init__(self):
    for name in ("lambda_kd", "gamma_cl"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise UserInputError(f"--{name} must be a finite number >= 0 (0 switches the term off), got {value!r}")
    if not (math.isfinite(self.kd_temperature) and self.kd_temperature > 0):
      raise UserInputError(f"--kd_temperature must be > 0 (1 is plain softmax), got {self.kd_temperature!r}")
    if self.cl_grid < 1:
      raise UserInputError(f"--cl_grid must be >= 1, got {self.cl_grid}")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Objective, temperature schedule and architecture optimiser of the search.

  Args:
    distill: the KL and cross-layer terms of the weight and architecture losses.
    resource: "fbnet" (alpha * log(E[FLOPs])^beta, the paper's), "budget"
      (1 + mu * max(0, E[cost] / target - 1)) or "none".
    alpha, beta: FBNet resource factor constants.
    mu: budget-form penalty slope.
    target_mflops: budget target in millions of multiply-accumulates.
    target_mparams: budget target in millions of parameters (instead of FLOPs).
    weight_only_epochs: warm-up epochs that update weights only.
    tau0: the Gumbel-softmax temperature of epoch 0 (also the supernet's initial temperature).
    tau_decay: tau = max(tau_min, tau0 * exp(-tau_decay * epoch)); None ("auto") reaches tau_min
      at the last epoch.
    tau_min: the temperature floor (> 0).
    arch_learning_rate: Adam learning rate of the width and tutor logits.
    arch_weight_decay: their weight decay.
    arch_split: "heldout" (a fixed architecture split) or "rotating" (the last part of each epoch).
  """
  distill: DistillConfig = DistillConfig()
  resource: str = "fbnet"
  alpha: float = 0.2
  beta: float = 0.5
  mu: float = 1.0
  target_mflops: float = 0.0
  target_mparams: float = 0.0
  weight_only_epochs: int = 0
  tau0: float = 5.0
  tau_decay: Optional[float] = None
  tau_min: float = 0.1
  arch_learning_rate: float = 0.1
  arch_weight_decay: float = 1e-4
  arch_split: str = "heldout"

  def __post_init__(self):
    if self.resource not in RESOURCE_FORMS:
      raise UserInputError(f"--resource must be one of {', '.join(RESOURCE_FORMS)}, got {self.resource!r}")
    if self.resource == "budget" and (self.target_mflops > 0) == (self.target_mparams > 0):
      raise UserInputError("--resource=budget needs exactly one of --target_mflops or --target_mparams (> 0)")
    for name in ("alpha", "beta", "mu", "arch_weight_decay"):
      if getattr(self, name) < 0:
        raise UserInputError(f"--{'resource_' + name if name in ('alpha', 'beta', 'mu') else name} must be "
                             f">= 0, got {getattr(self, name)}")
    if not self.tau_min > 0:
      raise UserInputError(f"--tau_min must be > 0 (the Gumbel-softmax divides by it), got {self.tau_min}")
    if not self.tau0 >= self.tau_min:
      raise UserInputError(f"--tau0 must be >= --tau_min ({self.tau_min}), got {self.tau0}")
    if self.tau_decay is not None and not self.tau_decay >= 0:
      raise UserInputError(f"--tau_decay must be >= 0 or 'auto', got {self.tau_decay}")
    if not self.arch_learning_rate > 0:
      raise UserInputError(f"--arch_learning_rate must be > 0, got {self.arch_learning_rate}")
    if self.arch_split not in ("heldout", "rotating"):
      raise UserInputError(f"--arch_split must be 'heldout' or 'rotating', got {self.arch_split!r}")
    if self.weight_only_epochs < 0:
      raise UserInputError(f"--weight_only_epochs must be >= 0, got {self.weight_only_epochs}")

  def decay_per_epoch(self, epochs: int) -> float:
    """`tau_decay`, with "auto" (None) resolved so tau reaches `tau_min` at the last epoch."""
    if self.tau_decay is not None:
      return float(self.tau_decay)
    if epochs <= 1:
      return 0.0
    return math.log(self.tau0 / self.tau_min) / max(epochs - 1, 1)

  def temperature(self, epoch: int, epochs: int) -> float:
    """The Gumbel-softmax temperature of `epoch` (0-based) in a search of `epochs` epochs."""
    return max(self.tau_min, self.tau0 * math.exp(-self.decay_per_epoch(epochs) * epoch))
