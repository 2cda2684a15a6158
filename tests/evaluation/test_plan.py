"""Tests for rnascl_tf.evaluation.plan: the ART attacks planned and their honest labels."""

import pytest

from rnascl_tf.configs import EvalConfig
from rnascl_tf.evaluation.plan import art_plan


@pytest.mark.parametrize("mode, classes", [("fast", 10), ("standard", 10), ("standard", 2)])
def test_art_plan_labels_are_honest(mode, classes):
  plan = art_plan(EvalConfig(autoattack=mode), classes)
  assert "not AutoAttack" in plan.label or "not full AutoAttack" in plan.label
  assert not plan.label.startswith("AutoAttack")
  for spec in plan.attacks:
    assert "ART 1.20.1" in spec.label and "AutoAttack" not in spec.label
  names = [s.name for s in plan.attacks]
  if mode == "fast":
    assert plan.label == "ART APGD-CE+APGD-T+Square (reduced, not AutoAttack)"
    assert "50 iter" in plan.attacks[0].label and "1000 queries" in plan.attacks[-1].label
  elif classes == 10:  # AutoAttack's standard settings, FAB-T reported as not run.
    assert names == ["apgd_ce", "apgd_t", "square"] and "100 iter" in plan.attacks[0].label
    assert "9 targets" in plan.attacks[1].label and "5000 queries" in plan.attacks[2].label
    assert "FAB-T" in plan.label
  else:  # The DLR loss needs 3 classes.
    assert names == ["apgd_ce", "square"] and {n["attack"] for n in plan.not_run} == {"FAB-T", "APGD-T"}
  assert art_plan(EvalConfig(autoattack=mode, eps=0.0), classes) is None
