"""Tests for rnascl_tf.evaluation.sanity: the checks catch broken numbers and gradient masking."""

import json

import pytest
import tensorflow as tf

from rnascl_tf.configs import EvalConfig
from rnascl_tf.evaluation import eval_reports, sanity


def test_gradient_masked_model_is_flagged(toy, honest):
  # An "8-bit input quantisation defence" whose gradient is exactly zero: FGSM/PGD cannot move,
  # but the decision is as fragile as the honest model's, and a black-box search finds that.
  def masked_fn(images):
    quantised = tf.stop_gradient(tf.round(images * 255.0) / 255.0) + 0.0 * images
    return toy.model(quantised, training=False)

  config = EvalConfig(eps=8 / 255, step_size=2 / 255, attacks=("fgsm", "pgd10"), eps_sweep=(), blackbox_queries=200)
  r = toy.evaluate(config, fn=masked_fn)
  check = r["sanity"]["checks"]["blackbox_not_stronger"]
  assert check["status"] == "fail" and not r["sanity"]["passed"]
  assert r["sanity"]["failed"] == ["input_gradient", "blackbox_not_stronger"] and r["input_gradient"] == "zero"
  assert check["whitebox_accuracy"] >= 0.8 and check["blackbox_accuracy"] <= 0.4
  assert check["fooled_only_by_blackbox"] >= 10
  assert "masked" in check["detail"]
  with pytest.raises(sanity.SanityCheckError, match="blackbox_not_stronger"):
    sanity.raise_for_sanity(r)
  assert honest["sanity"]["checks"]["blackbox_not_stronger"]["status"] == "pass"


def test_model_without_input_gradient_is_reported_as_masked_not_crashed(toy):
  # tf.round has no gradient (None, not zero): cleverhans used to fail with AttributeError on it.
  def rounded_fn(images):
    return toy.model(tf.round(images * 255.0) / 255.0, training=False)

  config = EvalConfig(eps=8 / 255, step_size=2 / 255, attacks=("fgsm", "pgd10"), eps_sweep=(), blackbox_queries=200)
  r = toy.evaluate(config, fn=rounded_fn)
  assert r["input_gradient"] == "absent" and not r["white_box_valid"]
  assert r["sanity"]["checks"]["input_gradient"]["status"] == "fail" and "input_gradient" in r["sanity"]["failed"]
  white = [e for e in r["attacks"] if e["family"] == "white-box"]
  black = [e for e in r["attacks"] if e["family"] == "black-box"]
  assert len(white) == 2 and all(e["valid"] is False and "gradient masking" in e["invalid_reason"] for e in white)
  assert white[0]["attack"] == "fgsm" and white[0]["max_perturbation"] == 0.0  # A zero gradient: FGSM stays put.
  assert len(black) == 1 and "valid" not in black[0] and black[0]["accuracy"] <= 0.4  # Square still breaks it.
  assert r["worst_case_white_box"]["valid"] is False
  with pytest.raises(sanity.SanityCheckError, match="input_gradient: the model has no input gradient"):
    sanity.raise_for_sanity(r)
  md = eval_reports.markdown_report(r)
  assert "(invalid: gradient masked)" in md and "**White-box numbers are invalid**" in md


def test_sanity_checks_catch_broken_numbers(toy, honest):
  broken = json.loads(json.dumps(honest))
  broken["eps_sweep"]["points"][0]["accuracy"] = 0.5  # eps=0 differs from clean
  broken["eps_sweep"]["points"][-1]["accuracy"] = 1.0  # accuracy rises with eps
  broken["attacks"][0]["max_perturbation"] = toy.eps + 1e-4  # out of the ball
  failed = sanity.sanity_checks(broken)["failed"]
  assert failed == ["eps0_equals_clean", "non_increasing_in_eps", "within_eps"]
