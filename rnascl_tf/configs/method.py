"""Configs of the method itself: distillation, search, retraining and the teacher."""

import dataclasses
import math
from typing import Optional, Sequence

from rnascl_tf.errors import UserInputError

RESOURCE_FORMS = ("fbnet", "budget", "none")


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
    space: a built-in search space name or the path of a JSON space declaration.
    student_layers: "all_convs" or "block_outputs": the student layers that get a tutor.
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
  space: str = "tiny"
  student_layers: str = "all_convs"
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
    if self.student_layers not in ("all_convs", "block_outputs"):
      raise UserInputError(f"--student_layers must be 'all_convs' or 'block_outputs', got {self.student_layers!r}")
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


# objective: (adversarial-training mode, KL term on, cross-layer term on)
OBJECTIVES = {
    "ce": ("standard", False, False),
    "logit_kd": ("standard", True, False),
    "ce_kd": ("standard", True, True),
    "trades_kd": ("trades", True, True),
    "pgd_at_kd": ("pgd", True, True),
}
TUTOR_MAPS = ("searched", "same_depth", "random", "last_layer")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """The teacher a search or a retraining distils from.

  Args:
    path: the teacher's .keras file (None: retraining takes the one recorded in the genotype).
    layers: its tap layers: "auto" (= "auto_conv"), "auto_conv", "auto_block" or comma-separated names.
    assume_pixel_input: trust that a teacher without a visible normalisation layer takes [0, 1] pixels.
  """
  path: Optional[str] = None
  layers: str = "auto"
  assume_pixel_input: bool = False


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
  """What the retraining trains: the genotype's child, with which objective and tutor map.

  Args:
    genotype: the search's genotype.json.
    objective: one of OBJECTIVES; it sets the adversarial-training mode and which distillation terms
      are on (the weights come from the `DistillConfig`).
    tutor_map: "searched" or an ablation of TUTOR_MAPS.
    warm_start_search_dir: a search run folder whose supernet weights warm start the child (None:
      from scratch).
  """
  genotype: str = ""
  objective: str = "ce_kd"
  tutor_map: str = "searched"
  warm_start_search_dir: Optional[str] = None

  def __post_init__(self):
    if not self.genotype:
      raise UserInputError("--genotype is required: the genotype.json written by python -m rnascl_tf.search")
    if self.objective not in OBJECTIVES:
      raise UserInputError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
    if self.tutor_map not in TUTOR_MAPS:
      raise UserInputError(f"--tutor_map must be one of {', '.join(TUTOR_MAPS)}, got {self.tutor_map!r}")

  @property
  def adv_mode(self) -> str:
    return OBJECTIVES[self.objective][0]

  def distill_for_objective(self, distill: DistillConfig) -> DistillConfig:
    """`distill` with the terms this objective does not use switched off (weight 0)."""
    _, use_kl, use_cl = OBJECTIVES[self.objective]
    return dataclasses.replace(distill, lambda_kd=distill.lambda_kd if use_kl else 0.0,
                               gamma_cl=distill.gamma_cl if use_cl else 0.0)


@dataclasses.dataclass(frozen=True)
class TeacherArchConfig:
  """Which built-in teacher to train.

  Args:
    arch: built-in architecture name (`models.teachers.TEACHER_ARCHS`).
    width: width multiplier.
    depth: depth for depth-configurable architectures (0 = the default).
    layers: tap layers recorded in the manifest ("auto", "auto_block", names).
  """
  arch: str = "small_cnn"
  width: float = 1.0
  depth: int = 0
  layers: str = "auto"
