"""Which ART attacks an evaluation runs, with their exact settings and honest labels (TensorFlow-free).

With `autoattack` "none" the plan is only the black-box Square of the gradient-masking check; otherwise
IBM ART's APGD-CE, APGD-T and Square at AutoAttack's standard settings or a cheaper budget. ART 1.20.1
has no FAB attack, so no set planned here is ever labelled "AutoAttack".
"""

import dataclasses
import importlib.metadata
from typing import Optional

from rnascl_tf.configs import EvalConfig
from rnascl_tf.robust.attack_specs import format_pixels

# Attack families: the black-box check compares the strongest of each.
WHITE_BOX, BLACK_BOX = "white-box", "black-box"


def package_version(package: str) -> str:
  """The installed version of `package` (a distribution name), or "not installed"."""
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "not installed"


def art_version() -> str:
  """The installed IBM ART version, named in every ART attack's label."""
  return package_version("adversarial-robustness-toolbox")


@dataclasses.dataclass(frozen=True)
class ArtAttackSpec:
  """One ART attack as it will run: name, label (with settings and backend), settings, family."""
  name: str
  label: str
  family: str
  settings: dict


@dataclasses.dataclass(frozen=True)
class ArtPlan:
  """The ART attacks of one evaluation and the label of the set."""
  label: str
  mode: str
  attacks: tuple
  not_run: tuple


def art_plan(config: EvalConfig, num_classes: int, batch_size: int = 128) -> Optional[ArtPlan]:
  """The ART attacks an evaluation runs, with their exact settings and labels (nothing runs here).

  Args:
    config: the evaluation config.
    num_classes: classes of the dataset (APGD-T needs >= 3 for the DLR loss).
    batch_size: batch size handed to ART.

  Returns:
    The plan: with `autoattack` "none", only the black-box Square of the gradient-masking check (None
    if `blackbox_queries` is 0); otherwise APGD-CE, APGD-T and Square at the budget of the mode.
    None also when eps is 0 (ART refuses eps = 0, and there is nothing to attack).
  """
  if config.eps <= 0:
    return None
  version = f"ART {art_version()}"
  eps = format_pixels(config.eps, "inf")
  budget = config.budget()

  def square(queries, p_init, restarts):
    settings = dict(backend=version, art_class="art.attacks.evasion.SquareAttack", norm="inf", eps=config.eps,
                    max_iter=queries, p_init=p_init, nb_restarts=restarts, loss="logit margin (ART default)",
                    batch_size=batch_size)
    restart_text = f"{restarts} restart" + ("s" if restarts > 1 else "")
    return ArtAttackSpec("square", f"Square (Linf, eps={eps}, {queries} queries, p_init={p_init:g}, "
                         f"{restart_text}, {version})", BLACK_BOX, settings)

  if budget is None:
    if config.blackbox_queries == 0:
      return None
    return ArtPlan(label=f"black-box check: Square via {version}", mode="none",
                   attacks=(square(config.blackbox_queries, 0.8, 1),), not_run=())
  restarts = f"{budget.apgd_restarts} restart" + ("s" if budget.apgd_restarts > 1 else "")
  common = dict(backend=version, art_class="art.attacks.evasion.AutoProjectedGradientDescent", norm="inf",
                eps=config.eps, eps_step=2 * config.eps, max_iter=budget.apgd_iter,
                nb_random_init=budget.apgd_restarts, batch_size=batch_size)
  specs = [ArtAttackSpec(
      "apgd_ce", f"APGD-CE (Linf, eps={eps}, {budget.apgd_iter} iter, {restarts}, {version})", WHITE_BOX,
      dict(common, loss_type="cross_entropy", targeted=False))]
  not_run = [{"attack": "FAB-T", "reason": f"{version} has no FAB attack"}]
  n_targets = min(budget.apgd_targets, num_classes - 1)
  if num_classes >= 3:
    specs.append(ArtAttackSpec(
        "apgd_t", f"APGD-T (Linf, eps={eps}, {n_targets} targets, {budget.apgd_iter} iter, {restarts}, "
        f"targeted DLR, {version})", WHITE_BOX,
        dict(common, loss_type="difference_logits_ratio", targeted=True, n_target_classes=n_targets,
             targets="the 2nd..(n+1)-th highest clean logits, one run each (AutoAttack's choice)",
             note="ART's targeted DLR: minimises -(z_t - max_{j!=t} z_j) / (z_pi1 - z_pi3); AutoAttack's "
                  "APGD-T uses -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)")))
  else:
    not_run.append({"attack": "APGD-T", "reason": f"the DLR loss needs >= 3 classes, the dataset has {num_classes}"})
  specs.append(square(budget.square_queries, budget.square_p_init, budget.square_restarts))
  names = "APGD-CE+APGD-T+Square" if num_classes >= 3 else "APGD-CE+Square"
  if config.art_budget is not None:
    label = f"ART {names} (custom budget, not AutoAttack)"
  elif config.autoattack == "fast":
    label = f"ART {names} (reduced, not AutoAttack)"
  else:
    label = (f"ART {names} at AutoAttack's standard settings (FAB-T is not in {version}: "
             "not full AutoAttack)")
  return ArtPlan(label=label, mode=config.autoattack if config.art_budget is None else "custom",
                 attacks=tuple(specs), not_run=tuple(not_run))


def autoattack_record(config: EvalConfig, plan: Optional[ArtPlan]) -> dict:
  """The "autoattack" section of eval.json: whether the ART set ran, its label, attacks and budget.

  Args:
    config: the evaluation config.
    plan: `art_plan(config, ...)`.

  Returns:
    {"mode", "ran"} plus, when it ran, {"label", "backend", "attacks", "not_run", "budget"}, or the
    reason it did not.
  """
  if config.autoattack == "none":
    return {"mode": "none", "ran": False}
  if plan is None:
    return {"mode": config.autoattack, "ran": False, "reason": "eps is 0: nothing to attack (ART refuses eps = 0)"}
  return {"mode": plan.mode, "ran": True, "label": plan.label, "backend": f"ART {art_version()}",
          "attacks": [s.label for s in plan.attacks], "not_run": list(plan.not_run),
          "budget": dataclasses.asdict(config.budget())}
