"""Attack specs: which white-box attack, with which budget, as a frozen config (TensorFlow-free).

`AttackConfig` names one attack and its settings in pixel units; `parse_attack` reads the short
specs of the command line ("pgd20", "pgd20x5", "cw20", ...) and `AttackConfig.spec` writes them.
"""

import dataclasses
import math
import re

import numpy as np

from rnascl_tf.errors import UserInputError

ATTACK_NAMES = ("fgsm", "pgd", "mifgsm", "cw_inf", "trades_kl", "disagreement_kl")
NORMS = ("inf", "l2")

# Attacks that accept `norm="l2"`; the others are L-inf only in this project.
_L2_ATTACKS = ("fgsm", "pgd")
# Attacks with a random start, for which restarts give different results.
_RESTART_ATTACKS = ("pgd", "cw_inf")
_ITERATIVE = ("pgd", "mifgsm", "cw_inf", "trades_kl", "disagreement_kl")
# Training-time attacks that start x + U(+-TRADES_START_RADIUS): the KL objectives (zero gradient at x).
SMALL_START_ATTACKS = ("trades_kl", "disagreement_kl")

# TRADES starts its KL-PGD from x + 0.001 * N(0, 1): a tiny kick off x, where the KL to the clean
# prediction has zero gradient. cleverhans PGD only offers a uniform start in a ball of radius
# `rand_minmax` around the point it projects onto, so we start uniformly in [-0.001, 0.001]^d.
TRADES_START_RADIUS = 0.001

_BACKEND = "cleverhans"


def format_pixels(value: float, norm: str) -> str:
  """Formats a pixel budget: '8/255' or '0.5/255' for L-inf multiples of 0.01/255, else '%g'."""
  if value == 0:
    return "0"
  scaled = value * 255.0
  if norm == "inf" and abs(scaled - round(scaled, 2)) < 1e-6:
    return f"{round(scaled, 2):g}/255"
  return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class AttackConfig:
  """One white-box attack and its settings, all budgets in pixel units.

  Attributes:
    name: one of ATTACK_NAMES: "fgsm", "pgd", "mifgsm", "cw_inf" (PGD on the CW margin loss) or
      "trades_kl" (TRADES' inner maximisation: PGD on KL(clean || adv)).
    eps: perturbation budget in the attack's norm, pixel units.
    step_size: per-step size of iterative attacks (ignored by fgsm, whose one step is eps). Capped
      at eps when larger; the label reports the step used.
    steps: iterations of iterative attacks (ignored by fgsm).
    norm: "inf" or "l2"; "l2" only for fgsm and pgd.
    rand_init: random start for pgd / cw_inf (uniform in the eps ball) and trades_kl (uniform in
      [-0.001, 0.001]^d). Ignored by fgsm and mifgsm, which have no random start.
    restarts: pgd / cw_inf only: runs per example, keeping the first one that fools the model.
    decay: mifgsm momentum decay factor.
  """

  name: str
  eps: float = 8 / 255
  step_size: float = 2 / 255
  steps: int = 10
  norm: str = "inf"
  rand_init: bool = True
  restarts: int = 1
  decay: float = 1.0

  def __post_init__(self):
    if self.name not in ATTACK_NAMES:
      raise UserInputError(f"attack name {self.name!r} is unknown; expected one of {list(ATTACK_NAMES)}")
    for field in ("eps", "step_size", "decay"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserInputError(f"attack {self.name}: {field}={value!r}, expected a finite number")
    if self.eps < 0:
      raise UserInputError(f"attack {self.name}: eps={self.eps} is negative; expected eps >= 0 (pixel units)")
    if self.norm not in NORMS:
      raise UserInputError(
          f"attack {self.name}: norm={self.norm!r} is unknown; expected one of {list(NORMS)}")
    if self.norm != "inf" and self.name not in _L2_ATTACKS:
      raise UserInputError(
          f"attack {self.name}: norm={self.norm!r} is not supported; {self.name} is L-inf only "
          f"(norm='l2' works for {list(_L2_ATTACKS)})")
    for field in ("steps", "restarts"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserInputError(f"attack {self.name}: {field}={value!r}, expected an integer >= 1")
    if self.name in _ITERATIVE and self.step_size <= 0:
      raise UserInputError(f"attack {self.name}: step_size={self.step_size} must be > 0 (pixel units)")
    if self.restarts > 1 and (self.name not in _RESTART_ATTACKS or not self.rand_init):
      # Without a random start every restart is the same run: reporting "N restarts" would lie.
      raise UserInputError(
          f"attack {self.name}: restarts={self.restarts} needs a random start; restarts > 1 only "
          f"for {list(_RESTART_ATTACKS)} with rand_init=True")
    if not isinstance(self.rand_init, bool):
      raise UserInputError(f"attack {self.name}: rand_init={self.rand_init!r}, expected True or False")

  @property
  def effective_step_size(self) -> float:
    """The step iterative attacks actually take: min(step_size, eps) (cleverhans needs step <= eps)."""
    return min(self.step_size, self.eps)

  def label(self) -> str:
    """Human-readable name with every setting and the backend, used as the key of reported numbers.

    Returns:
      e.g. "PGD-20 (Linf, eps=8/255, step=2/255, 1 restart, cleverhans)".
    """
    norm = "Linf" if self.norm == "inf" else "L2"
    eps = f"eps={format_pixels(self.eps, self.norm)}"
    step = f"step={format_pixels(self.effective_step_size, self.norm)}"
    restarts = f"{self.restarts} restart" + ("s" if self.restarts > 1 else "")
    start = [] if self.rand_init else ["no random start"]
    if self.name == "fgsm":
      parts, title = [norm, eps], "FGSM"
    elif self.name == "pgd":
      parts, title = [norm, eps, step, *start, restarts], f"PGD-{self.steps}"
    elif self.name == "cw_inf":
      parts, title = [norm, eps, step, *start, restarts, "margin loss"], f"CW-inf-{self.steps}"
    elif self.name == "mifgsm":
      parts, title = [norm, eps, step, f"decay={self.decay:g}"], f"MI-FGSM-{self.steps}"
    else:
      start = ["start=x+U(+-0.001)"] if self.rand_init else start
      title = "TRADES-KL" if self.name == "trades_kl" else "TEACHER-DISAGREEMENT-KL"
      parts, title = [norm, eps, step, *start], f"{title}-PGD-{self.steps}"
    backend = _BACKEND + (" PGD" if self.name in ("cw_inf", *SMALL_START_ATTACKS) else "")
    return f"{title} ({', '.join(parts + [backend])})"

  def spec(self) -> str:
    """The canonical short form that `parse_attack` reads back, e.g. "pgd20x5".

    Returns:
      The spec string; `parse_attack(c.spec(), c.eps, c.step_size) == c` for every config that
      `parse_attack` returns (fgsm's unused `steps` is not part of the spec).

    Raises:
      UserInputError: if the config has settings a spec cannot express (norm, rand_init, decay).
    """
    if self.norm != "inf" or not self.rand_init or self.decay != 1.0:
      raise UserInputError(
          f"attack {self.label()} has settings (norm, rand_init or decay) that a spec string "
          "cannot express; build the AttackConfig directly")
    if self.name == "fgsm":
      return "fgsm"
    if self.name not in _SPEC_PREFIX:
      raise UserInputError(f"attack {self.name} is a training-time attack without a spec string")
    prefix = _SPEC_PREFIX[self.name]
    return f"{prefix}{self.steps}" + (f"x{self.restarts}" if self.restarts > 1 else "")


_SPEC_PREFIX = {"pgd": "pgd", "mifgsm": "mifgsm", "cw_inf": "cw", "trades_kl": "trades"}
_SPEC_NAMES = {
    "fgsm": "fgsm", "pgd": "pgd", "mifgsm": "mifgsm", "mi-fgsm": "mifgsm", "cw": "cw_inf",
    "cw_inf": "cw_inf", "cwinf": "cw_inf", "trades": "trades_kl", "trades_kl": "trades_kl",
}
_SPEC_RE = re.compile(r"^(?P<name>[a-z_-]+?)-?(?P<steps>\d+)?(?:x(?P<restarts>\d+))?$")
_SPEC_FORMS = ("fgsm", "pgd<steps> (pgd20, pgd-100)", "pgd<steps>x<restarts> (pgd20x5)",
               "mifgsm<steps>", "cw<steps>[x<restarts>] (CW-inf)", "trades<steps> (TRADES KL-PGD)")


def parse_attack(spec: str, eps: float, step_size: float) -> AttackConfig:
  """Parses a short attack spec such as "pgd20", "pgd-100", "pgd20x5", "fgsm", "mifgsm20", "cw20".

  Args:
    spec: the attack spec (case-insensitive). Iterative attacks need a step count; "x<N>" asks for
      N restarts (pgd and cw only).
    eps: L-inf budget in pixel units.
    step_size: step of iterative attacks in pixel units.

  Returns:
    The AttackConfig (L-inf, random start where the attack has one, decay 1.0).

  Raises:
    UserInputError: naming the spec and listing the valid forms.
  """
  text = str(spec).strip().lower()
  match = _SPEC_RE.match(text)
  name = _SPEC_NAMES.get(match.group("name")) if match else None

  def bad(why):
    return UserInputError(f"attack spec {spec!r}: {why}; valid forms: {', '.join(_SPEC_FORMS)}")

  if name is None:
    raise bad("unknown attack")
  steps, restarts = match.group("steps"), match.group("restarts")
  if name == "fgsm":
    if steps is not None or restarts is not None:
      raise bad("fgsm takes neither a step count nor restarts")
    return AttackConfig(name="fgsm", eps=eps, step_size=step_size, steps=1)
  if steps is None:
    raise bad(f"{name} needs a step count")
  try:
    return AttackConfig(name=name, eps=eps, step_size=step_size, steps=int(steps),
                        restarts=int(restarts) if restarts is not None else 1)
  except UserInputError as e:
    raise bad(str(e)) from None

