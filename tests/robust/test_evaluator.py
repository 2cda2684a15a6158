"""Tests for rnascl_tf.robust.evaluator: per-batch correctness per attack and robust accuracy over a dataset."""

import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.errors import UserInputError
from rnascl_tf.robust import attacks
from rnascl_tf.robust import evaluator
from rnascl_tf.robust.attack_specs import AttackConfig

EPS = 8 / 255
# Relative/absolute slack for float32 rounding in x + clip(eta) - x.
TOL = 1e-6


def test_attack_batch_fgsm_equals_generate_and_argmax(toy):
  config = AttackConfig("fgsm", eps=EPS)
  ev = evaluator.RobustEvaluator(toy.model_fn, [config])
  [out] = list(ev.attack_batch(toy.x, toy.y))
  x_adv = attacks.generate(toy.model_fn, toy.x, toy.y, config).numpy()
  expected = np.argmax(toy.model_fn(x_adv), -1) == toy.y
  assert out.config == config and out.label == config.label() and out.seconds > 0
  assert out.correct.dtype == bool and out.correct.shape == toy.y.shape
  np.testing.assert_allclose(out.x_adv, x_adv, atol=TOL)
  np.testing.assert_array_equal(out.correct, expected)
  assert out.correct.mean() <= 0.5  # The undefended model: FGSM at 8/255 fools most examples.
  np.testing.assert_allclose(ev.predict(toy.x), toy.model_fn(toy.x).numpy(), atol=TOL)


def test_attack_batch_order_targets_and_clean_logits(toy):
  configs = [AttackConfig("fgsm", eps=EPS), AttackConfig("trades_kl", steps=3, rand_init=False),
             AttackConfig("pgd", eps=0.0, steps=2)]
  ev = evaluator.RobustEvaluator(toy.model_fn, configs)
  outcomes = list(ev.attack_batch(toy.x, toy.y))
  assert [o.label for o in outcomes] == [c.label() for c in configs]
  # trades_kl is given the clean probabilities (generate refuses labels for it) and scored against y.
  probs = tf.nn.softmax(toy.model_fn(toy.x))
  x_trades = attacks.generate(toy.model_fn, toy.x, probs, configs[1])
  np.testing.assert_array_equal(outcomes[1].correct, np.argmax(toy.model_fn(x_trades), -1) == toy.y)
  # eps = 0: the images are unchanged and correctness is the clean one.
  clean = np.argmax(ev.predict(toy.x), -1) == toy.y
  np.testing.assert_array_equal(outcomes[2].x_adv, toy.x)
  np.testing.assert_array_equal(outcomes[2].correct, clean)
  # Handing in the clean logits changes nothing (deterministic attacks).
  given = list(ev.attack_batch(toy.x, toy.y, ev.predict(toy.x)))
  for a, b in zip(outcomes, given):
    np.testing.assert_array_equal(a.correct, b.correct)


def test_batches_truncate_and_check():
  x, y = np.full((10, 4, 4, 1), 0.5, np.float32), np.arange(10)
  data = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
  sizes = [len(b[1]) for b in evaluator.batches(data, max_examples=6)]
  assert sizes == [4, 2]
  out = list(evaluator.batches(data))
  assert [b[0].dtype for b in out] == [np.float32] * 3 and [b[1].dtype for b in out] == [np.int32] * 3
  with pytest.raises(UserInputError, match="max_examples=0"):
    list(evaluator.batches(data, max_examples=0))
  with pytest.raises(UserInputError, match=r"evaluation: batches must be images \[B, H, W, C\]"):
    list(evaluator.batches([(x[0], y[:1])], where="evaluation"))
  with pytest.raises(UserInputError, match=r"evaluation: x must be pixels in \[0, 1\]"):
    list(evaluator.batches([(x * 255, y)], where="evaluation"))


def test_robust_accuracy_worst_case_and_clean(toy):
  eps = 4 / 255
  configs = [
      AttackConfig("fgsm", eps=eps),
      AttackConfig("pgd", eps=eps, step_size=1 / 255, steps=5),
      AttackConfig("cw_inf", eps=eps, step_size=1 / 255, steps=5),
      AttackConfig("trades_kl", eps=eps, step_size=1 / 255, steps=5),
      AttackConfig("pgd", eps=0.0, steps=5),  # Sanity check: eps = 0 gives the clean accuracy.
  ]
  dataset = tf.data.Dataset.from_tensor_slices((toy.x, toy.y)).batch(24)
  result = evaluator.robust_accuracy(toy.model_fn, dataset, configs, max_examples=50)
  labels = [c.label() for c in configs]
  assert result["num_examples"] == 50
  plain = float(np.mean(np.argmax(toy.model_fn(toy.x[:50]), -1) == toy.y[:50]))
  assert result["clean"] == pytest.approx(plain)
  assert result[labels[-1]] == pytest.approx(plain)
  assert result["worst_case"] <= min([result["clean"]] + [result[label] for label in labels])
  assert result["worst_case"] < result["clean"]
  assert set(result["max_perturbation"]) == set(labels)
  for config, label in zip(configs, labels):
    assert result["max_perturbation"][label] <= config.eps + TOL
  assert result["max_perturbation"][labels[1]] > eps / 2
  assert result["max_perturbation"][labels[-1]] == 0.0


def test_robust_accuracy_rejects_unscaled_pixels(toy):
  dataset = [(toy.x[:4] * 255.0, toy.y[:4])]
  with pytest.raises(UserInputError, match=r"pixels in \[0, 1\]"):
    evaluator.robust_accuracy(toy.model_fn, dataset, [AttackConfig("fgsm")])


def test_robust_accuracy_rejects_duplicate_attacks(toy):
  with pytest.raises(UserInputError, match="duplicate"):
    evaluator.robust_accuracy(toy.model_fn, [], [AttackConfig("fgsm"), AttackConfig("fgsm")])


def test_a_smaller_last_batch_is_padded_not_retraced_and_never_counted(toy):
  traces = []

  def model_fn(x):
    traces.append(tuple(x.shape))  # Runs once per trace, not per call.
    return toy.model_fn(x)

  configs = [AttackConfig("fgsm", eps=EPS), AttackConfig("trades_kl", steps=2, rand_init=False)]
  ev = evaluator.RobustEvaluator(model_fn, configs)
  outcomes = [list(ev.attack_batch(x, y)) for x, y in ((toy.x[:24], toy.y[:24]), (toy.x[24:34], toy.y[24:34]))]
  assert {shape[0] for shape in traces} == {24}, traces  # The 10-example batch ran padded to 24.
  last = outcomes[1]
  assert [o.x_adv.shape[0] for o in last] == [10, 10] and [o.correct.shape for o in last] == [(10,), (10,)]
  # The real rows are what an unpadded attack gives (attacks treat every example on its own).
  x_fgsm = attacks.generate(toy.model_fn, toy.x[24:34], toy.y[24:34], configs[0]).numpy()
  np.testing.assert_allclose(last[0].x_adv, x_fgsm, atol=TOL)
  np.testing.assert_array_equal(last[0].correct, np.argmax(toy.model_fn(x_fgsm), -1) == toy.y[24:34])
  # Totals over a split with a smaller last batch count only its real examples.
  dataset = tf.data.Dataset.from_tensor_slices((toy.x[:34], toy.y[:34])).batch(24)
  result = ev.evaluate(dataset)
  assert result["num_examples"] == 34
  fgsm_all = attacks.generate(toy.model_fn, toy.x[:34], toy.y[:34], configs[0]).numpy()
  assert result[configs[0].label()] == pytest.approx(np.mean(np.argmax(toy.model_fn(fgsm_all), -1) == toy.y[:34]))
