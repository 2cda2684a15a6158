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
    gamma_cl: weight of the cross-layer attention loss (0 switches it off; None: the stage's
      default, 1 for the search and the objective's preset for the retraining, `RetrainConfig`).
    cl_grid: attention maps are resized to cl_grid x cl_grid.
    tutor_map: retraining only: per student layer, the index of its teacher layer (teacher taps'
      order). The search learns the map instead.
  """
  lambda_kd: float = 1.0
  kd_temperature: float = 1.0
  gamma_cl: Optional[float] = None
  cl_grid: int = 8
  tutor_map: Optional[Sequence[int]] = None

  def __post_init__(self):
    for name in ("lambda_kd", "gamma_cl"):
      value = getattr(self, name)
      if value is None and name == "gamma_cl":
        continue
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise UserInputError(f"--{name} must be a finite number >= 0 (0 switches the term off), got {value!r}")
    if not (math.isfinite(self.kd_temperature) and self.kd_temperature > 0):
      raise UserInputError(f"--kd_temperature must be > 0 (1 is plain softmax), got {self.kd_temperature!r}")
    if self.cl_grid < 1:
      raise UserInputError(f"--cl_grid must be >= 1, got {self.cl_grid}")

  def with_default_gamma(self, gamma_cl: float) -> "DistillConfig":
    """This config with an unset (None) `gamma_cl` replaced by `gamma_cl`."""
    return self if self.gamma_cl is not None else dataclasses.replace(self, gamma_cl=float(gamma_cl))


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
    # The search always has its cross-layer term: an unset weight means the paper's 1.
    object.__setattr__(self, "distill", self.distill.with_default_gamma(1.0))
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


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a retraining objective is made of (the losses themselves: `robust.objectives`).

  Args:
    loss: the base loss of `robust.objectives.BASE_LOSSES` ("ce", "pgd_at", "trades", "ard",
      "rslad", "adaad").
    mode: the `RobustConfig.mode` closest to its inner maximisation (recorded in summaries).
    kd_term: adds lambda_kd * T^2 KL(teacher || student) (the `*_kd` presets).
    gamma_cl: the preset weight of the cross-layer term (an explicit --gamma_cl overrides it).
  """
  loss: str
  mode: str
  kd_term: bool = False
  gamma_cl: float = 0.0

  @property
  def base_needs_teacher(self) -> bool:
    return self.loss in ("ard", "rslad", "adaad")


# The presets of earlier versions keep their meaning: ce_kd = CE + KL + cross-layer, and so on.
OBJECTIVES = {
    "ce": Objective("ce", "standard"),
    "logit_kd": Objective("ce", "standard", kd_term=True),
    "ce_kd": Objective("ce", "standard", kd_term=True, gamma_cl=1.0),
    "trades_kd": Objective("trades", "trades", kd_term=True, gamma_cl=1.0),
    "pgd_at_kd": Objective("pgd_at", "pgd", kd_term=True, gamma_cl=1.0),
    "trades": Objective("trades", "trades"),
    "pgd_at": Objective("pgd_at", "pgd"),
    "ard": Objective("ard", "pgd"),
    "rslad": Objective("rslad", "trades"),
    "adaad": Objective("adaad", "trades"),
}
TUTOR_MAPS = ("searched", "same_depth", "random", "last_layer")
ARCHITECTURES = ("searched", "uniform", "random", "resnet20")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
  """What the retraining trains: which network, with which objective and tutor map.

  Args:
    genotype: the search's genotype.json.
    objective: one of OBJECTIVES; it sets the base loss, its inner maximisation and which
      distillation terms are on (their weights come from the `DistillConfig` and the fields below).
    tutor_map: "searched" or an ablation of TUTOR_MAPS.
    warm_start_search_dir: a search run folder whose supernet weights warm start the child (None:
      from scratch).
    ard_alpha: ARD's alpha, the weight of its KL term ((1 - alpha) weighs the clean CE).
    ard_temperature: ARD's temperature t (the KL term is multiplied by t^2).
    rslad_adv_weight: RSLAD's weight of KL(teacher(x) || student(x')); 1 - it weighs the clean term.
    adaad_alpha: AdaAD's alpha, the weight of KL(teacher(x') || student(x')).
    architecture: "searched" (the genotype's child), "uniform" / "random" (children of the same space
      at matched FLOPs) or "resnet20" (the hand-designed reference).
    arch_seed: the seed of the random child.
    arch_target_mflops: the FLOPs target of the uniform and random children in millions (0: the
      searched child's).
  """
  genotype: str = ""
  objective: str = "rslad"
  tutor_map: str = "searched"
  warm_start_search_dir: Optional[str] = None
  ard_alpha: float = 1.0
  ard_temperature: float = 30.0
  rslad_adv_weight: float = 5.0 / 6.0
  adaad_alpha: float = 1.0
  architecture: str = "searched"
  arch_seed: int = 0
  arch_target_mflops: float = 0.0

  def __post_init__(self):
    if not self.genotype:
      raise UserInputError("--genotype is required: the genotype.json written by python -m rnascl_tf.search")
    if self.objective not in OBJECTIVES:
      raise UserInputError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
    if self.tutor_map not in TUTOR_MAPS:
      raise UserInputError(f"--tutor_map must be one of {', '.join(TUTOR_MAPS)}, got {self.tutor_map!r}")
    for name in ("ard_alpha", "rslad_adv_weight", "adaad_alpha"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UserInputError(f"--{name} is a mixing weight and must lie in [0, 1], got {value!r}")
    if not (math.isfinite(self.ard_temperature) and self.ard_temperature > 0):
      raise UserInputError(f"--ard_temperature must be > 0, got {self.ard_temperature!r}")
    if self.architecture not in ARCHITECTURES:
      raise UserInputError(f"--architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
    if not (math.isfinite(self.arch_target_mflops) and self.arch_target_mflops >= 0):
      raise UserInputError(f"--arch_target_mflops must be >= 0 (0: the searched child's FLOPs), "
                           f"got {self.arch_target_mflops!r}")
    if self.warm_start_search_dir and self.architecture != "searched":
      raise UserInputError(f"--warm_start_search_dir copies the supernet into the searched child; it cannot warm "
                           f"start --architecture={self.architecture}")

  @property
  def spec(self) -> Objective:
    return OBJECTIVES[self.objective]

  @property
  def adv_mode(self) -> str:
    return self.spec.mode

  def distill_for_objective(self, distill: DistillConfig) -> DistillConfig:
    """`distill` with the objective's preset where --gamma_cl is unset and unused terms switched off.

    Raises:
      UserInputError: a cross-layer weight > 0 for an objective without a teacher.
    """
    spec = self.spec
    distill = distill.with_default_gamma(spec.gamma_cl)
    if distill.gamma_cl > 0 and not (spec.kd_term or spec.base_needs_teacher):
      raise UserInputError(
          f"--gamma_cl={distill.gamma_cl:g}: --objective={self.objective} has no teacher, so there is no "
          "cross-layer term to weigh; use 0, or an objective with a teacher (e.g. ard, rslad, adaad, trades_kd)")
    return dataclasses.replace(distill, lambda_kd=distill.lambda_kd if spec.kd_term else 0.0)

  def needs_teacher(self, distill: DistillConfig) -> bool:
    """Whether this objective, with `distill` (after `distill_for_objective`), runs a teacher."""
    return self.spec.base_needs_teacher or distill.lambda_kd > 0 or distill.gamma_cl > 0


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
