"""Sanity checks of an evaluation result, reported next to its numbers (`result["sanity"]`).

- eps = 0 gives the clean accuracy;
- accuracy does not rise with eps (tolerance `monotone_tolerance`);
- every perturbation is within eps and every image in [0, 1] (tolerance `PERTURBATION_TOLERANCE`);
- the worst case is at most the clean and every per-attack accuracy;
- the model has a non-zero input gradient (`result["input_gradient"]`): an absent one (a step such
  as tf.round on the input path) or an exactly zero one makes every gradient attack useless;
- the black-box attack is not more successful than the best white-box one (tolerance
  `blackbox_tolerance`): if it is, gradients are masked and the white-box numbers overstate robustness.

When either masking check fails, `mark_white_box_validity` marks every white-box number invalid;
the black-box numbers are kept.
"""

from typing import Optional

from rnascl_tf.evaluation.plan import BLACK_BOX, WHITE_BOX

# float32 rounding of x + clip(delta) - x is ~1e-7; anything above this is a real budget violation.
PERTURBATION_TOLERANCE = 1e-6
# Exit status of the entry point when a sanity check fails (2 is bad input, 3 divergence).
SANITY_EXIT_CODE = 4


# The checks that find gradient masking; when one fails the white-box numbers are invalid.
MASKING_CHECKS = ("input_gradient", "blackbox_not_stronger")
_GRADIENT_DETAILS = {
    "present": "the model has a non-zero input gradient",
    "zero": ("the model's input gradient is exactly zero (e.g. a quantisation step under stop_gradient): gradient "
             "masking, the white-box numbers are invalid"),
    "absent": ("the model has no input gradient (a non-differentiable step such as tf.round on the input path): "
               "the white-box attacks ran with a zero gradient, their numbers are invalid; the black-box ones stand"),
}


class SanityCheckError(RuntimeError):
  """A sanity check of an evaluation failed: the numbers are written but must not be trusted."""


def monotone_tolerance(num_examples: int) -> float:
  """Allowed rise of accuracy from one sweep eps to the next larger one.

  PGD starts at a random point, so two runs at nearby budgets can differ on borderline examples
  by luck, not because a bigger budget helps the model. One example or half a percentage point,
  whichever is larger, absorbs that noise; a broken attack (e.g. steps not scaled, clipping wrong)
  moves accuracy by much more.

  Args:
    num_examples: examples evaluated.

  Returns:
    The tolerance as a fraction of examples.
  """
  return max(1.0 / num_examples, 0.005)


def blackbox_tolerance(num_examples: int) -> float:
  """Allowed margin by which black-box accuracy may fall below the lowest white-box accuracy.

  On an honest model a query-limited black-box attack is weaker than gradient attacks; it can win on
  a few examples by luck. One example or one percentage point, whichever is larger.

  Args:
    num_examples: examples evaluated.

  Returns:
    The tolerance as a fraction of examples.
  """
  return max(1.0 / num_examples, 0.01)


def _check(passed: Optional[bool], detail: str, **values) -> dict:
  status = "not run" if passed is None else ("pass" if passed else "fail")
  return {"status": status, "detail": detail, **values}


def sanity_checks(result: dict, blackbox_only: Optional[int] = None) -> dict:
  """The sanity checks of an evaluation result (see the module docstring).

  Args:
    result: an `evaluate_model` result (its "sanity" key is ignored).
    blackbox_only: examples fooled by a black-box attack but by no white-box one (reported only).

  Returns:
    {"passed": bool, "failed": [names], "checks": {name: {"status": "pass" | "fail" | "not run",
    "detail": str, ...values}}}.
  """
  n = result["num_examples"]
  clean = result["clean"]["accuracy"]
  points = result["eps_sweep"]["points"]
  checks = {}

  zero = next((p for p in points if p["eps"] == 0), None)
  if zero is None:
    checks["eps0_equals_clean"] = _check(None, "no eps = 0 point in the sweep")
  else:
    checks["eps0_equals_clean"] = _check(
        abs(zero["accuracy"] - clean) <= 1e-12, f"accuracy at eps = 0 is {zero['accuracy']:.4f}, clean is {clean:.4f}",
        clean=clean, eps0=zero["accuracy"])

  tol = monotone_tolerance(n)
  rises = [{"from_eps": a["eps_pixels"], "to_eps": b["eps_pixels"], "rise": b["accuracy"] - a["accuracy"]}
           for a, b in zip(points, points[1:]) if b["accuracy"] > a["accuracy"] + tol]
  if len(points) < 2:
    checks["non_increasing_in_eps"] = _check(None, "fewer than two sweep points", tolerance=tol)
  else:
    detail = (f"accuracy rises with eps: {rises}" if rises else
              f"accuracy never rises by more than {tol:.4f} over {len(points)} budgets")
    checks["non_increasing_in_eps"] = _check(not rises, detail, tolerance=tol, violations=rises)

  outside = []
  for e in result["attacks"] + points:
    lo, hi = e["pixel_range"]
    if e["max_perturbation"] > e["eps"] + PERTURBATION_TOLERANCE:
      outside.append({"label": e["label"], "eps": e["eps"], "max_perturbation": e["max_perturbation"]})
    if lo < -PERTURBATION_TOLERANCE or hi > 1.0 + PERTURBATION_TOLERANCE:
      outside.append({"label": e["label"], "pixel_range": [lo, hi]})
  checks["within_eps"] = _check(
      not outside, f"{len(outside)} attack(s) leave the eps ball or [0, 1]: {outside}" if outside else
      "every adversarial image is within its eps (L-inf) and in [0, 1]",
      tolerance=PERTURBATION_TOLERANCE, violations=outside)

  worst = result["worst_case"]["accuracy"]
  above = [e["label"] for e in result["attacks"] if worst > e["accuracy"] + 1e-12]
  above += ["clean"] if worst > clean else []
  checks["worst_case_bounded"] = _check(
      not above, f"worst case {worst:.4f} exceeds {above}" if above else
      "the worst case is at most the clean and every per-attack accuracy", violations=above)

  gradient = result.get("input_gradient")
  checks["input_gradient"] = _check(
      None if gradient is None else gradient == "present", _GRADIENT_DETAILS.get(gradient, "not probed"),
      gradient=gradient)

  white = [e for e in result["attacks"] if e["family"] == WHITE_BOX and e["eps"] > 0]
  black = [e for e in result["attacks"] if e["family"] == BLACK_BOX]
  btol = blackbox_tolerance(n)
  if not black:
    checks["blackbox_not_stronger"] = _check(
        None, "no black-box attack ran (--blackbox_queries=0 or eps = 0)", tolerance=btol)
  elif not white:
    checks["blackbox_not_stronger"] = _check(None, "no white-box attack ran at eps > 0", tolerance=btol)
  else:
    strongest_black = min(black, key=lambda e: e["accuracy"])
    strongest_white = min(white, key=lambda e: e["accuracy"])
    masked = strongest_black["accuracy"] < strongest_white["accuracy"] - btol
    detail = (f"black-box {strongest_black['label']} reaches {strongest_black['accuracy']:.4f}, below the best "
              f"white-box {strongest_white['label']} at {strongest_white['accuracy']:.4f} (tolerance {btol:.4f}): "
              "gradients look masked, white-box numbers overstate robustness" if masked else
              f"black-box {strongest_black['accuracy']:.4f} >= best white-box {strongest_white['accuracy']:.4f} "
              f"- {btol:.4f}")
    checks["blackbox_not_stronger"] = _check(
        not masked, detail, tolerance=btol, blackbox=strongest_black["label"],
        blackbox_accuracy=strongest_black["accuracy"], whitebox=strongest_white["label"],
        whitebox_accuracy=strongest_white["accuracy"], fooled_only_by_blackbox=blackbox_only)

  failed = [name for name, c in checks.items() if c["status"] == "fail"]
  return {"passed": not failed, "failed": failed, "checks": checks}


def mark_white_box_validity(result: dict) -> None:
  """Sets `result["white_box_valid"]` and, when a masking check failed, marks every white-box number.

  Each white-box attack entry and eps-sweep point then gets "valid": False and an "invalid_reason";
  "worst_case_white_box" too. The black-box numbers and the overall worst case (which includes them)
  are kept.

  Args:
    result: an evaluation result with its "sanity" section (changed in place).
  """
  failed = [name for name in MASKING_CHECKS if name in result["sanity"]["failed"]]
  result["white_box_valid"] = not failed
  if not failed:
    return
  reason = (f"gradient masking ({', '.join(failed)} failed): the white-box attacks cannot follow the model's "
            "gradient, so their accuracy overstates robustness")
  for e in result["attacks"] + result["eps_sweep"]["points"] + [result["worst_case_white_box"]]:
    if e.get("family", WHITE_BOX) == WHITE_BOX:
      e.update(valid=False, invalid_reason=reason)


def raise_for_sanity(result: dict, where: str = "") -> None:
  """Raises `SanityCheckError` naming every failed check of `result` (no-op if all passed).

  Args:
    result: an evaluation result.
    where: e.g. the path of eval.json, appended to the message.
  """
  sanity = result["sanity"]
  if sanity["passed"]:
    return
  details = "; ".join(f"{name}: {sanity['checks'][name]['detail']}" for name in sanity["failed"])
  suffix = f" (numbers written to {where})" if where else ""
  raise SanityCheckError(f"evaluation sanity check(s) failed: {details}{suffix}")
