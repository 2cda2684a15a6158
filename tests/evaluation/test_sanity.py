"""Tests for rnascl_tf.evaluation.sanity: the checks catch broken numbers and gradient masking."""

import json

import pytest
import tensorflow as tf

from rnascl_tf.configs import EvalConfig
from rnascl_tf.evaluation import sanity


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
  assert r["sanity"]["failed"] == ["blackbox_not_stronger"]
  assert check["whitebox_accuracy"] >= 0.8 and check["blackbox_accuracy"] <= 0.4
  assert check["fooled_only_by_blackbox"] >= 10
  assert "masked" in check["detail"]
  with pytest.raises(sanity.SanityCheckError, match="blackbox_not_stronger"):
    sanity.raise_for_sanity(r)
  assert honest["sanity"]["checks"]["blackbox_not_stronger"]["status"] == "pass"


def test_sanity_checks_catch_broken_numbers(toy, honest):
  broken = json.loads(json.dumps(honest))
  broken["eps_sweep"]["points"][0]["accuracy"] = 0.5  # eps=0 differs from clean
  broken["eps_sweep"]["points"][-1]["accuracy"] = 1.0  # accuracy rises with eps
  broken["attacks"][0]["max_perturbation"] = toy.eps + 1e-4  # out of the ball
  failed = sanity.sanity_checks(broken)["failed"]
  assert failed == ["eps0_equals_clean", "non_increasing_in_eps", "within_eps"]
