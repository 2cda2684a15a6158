"""Configs of the robustness evaluation: the attacks, the eps sweep and the ART budgets."""

import dataclasses
from typing import Optional

from rnascl_tf.configs.common import check_pixels
from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.attack_specs import AttackConfig, parse_attack

AUTOATTACK_MODES = ("none", "standard", "fast")
DEFAULT_ATTACKS = ("fgsm", "pgd20", "mifgsm20", "cw20")
DEFAULT_SWEEP = (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255)


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
