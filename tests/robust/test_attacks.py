"""Tests for rnascl_tf.robust.attacks on the tiny undefended toy model of conftest.py (8x8x3 pixels, 4 classes)."""

import numpy as np
import pytest
import tensorflow as tf

from rnascl_tf.errors import UserInputError
from rnascl_tf.robust import attacks
from rnascl_tf.robust.attack_specs import ATTACK_NAMES, AttackConfig, parse_attack

EPS = 8 / 255
# Relative/absolute slack for float32 rounding in x + clip(eta) - x.
TOL = 1e-6


def _accuracy(toy, images):
  return float(np.mean(np.argmax(toy.model_fn(images), -1) == toy.y))


def _target(toy, config, images):
  """True labels, or the clean probabilities for TRADES' KL attack."""
  if config.name == "trades_kl":
    return tf.nn.softmax(toy.model_fn(images))
  return toy.y


def _assert_valid(x_adv, x, config):
  x_adv = np.asarray(x_adv)
  assert x_adv.shape == x.shape and x_adv.dtype == np.float32
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  size = attacks.perturbation_norm(x_adv, x, config.norm).numpy()
  assert size.max() <= config.eps * (1 + TOL) + TOL, (config.label(), size.max())
  return size


def test_toy_model_is_accurate(toy):
  assert _accuracy(toy, toy.x) >= 0.95


@pytest.mark.parametrize("config", [
    AttackConfig("fgsm"),
    AttackConfig("fgsm", eps=0.5, norm="l2"),
    AttackConfig("pgd", steps=5),
    AttackConfig("pgd", eps=0.5, step_size=0.2, steps=5, norm="l2"),
    AttackConfig("pgd", steps=3, restarts=3),
    AttackConfig("mifgsm", steps=5),
    AttackConfig("cw_inf", steps=5),
    AttackConfig("trades_kl", steps=5),
], ids=lambda c: f"{c.name}-{c.norm}-x{c.restarts}")
def test_perturbation_within_eps_and_pixel_box(toy, config):
  # Saturated rows exercise the [0, 1] clipping.
  x = toy.x.copy()
  x[:, 0] = 0.0
  x[:, 1] = 1.0
  x_adv = attacks.generate(toy.model_fn, x, _target(toy, config, x), config)
  size = _assert_valid(x_adv, x, config)
  assert size.max() > config.eps / 4  # the attack did move the points


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_eps_zero_returns_input_exactly(toy, name):
  config = AttackConfig(name, eps=0.0, steps=3)
  x_adv = attacks.generate(toy.model_fn, toy.x, _target(toy, config, toy.x), config)
  np.testing.assert_array_equal(np.asarray(x_adv), toy.x)


@pytest.mark.parametrize("spec", ["fgsm", "pgd10", "mifgsm10", "cw10"])
def test_attack_lowers_accuracy_of_undefended_model(toy, spec):
  # For cw10 this also checks the margin's sign: cleverhans maximises loss_fn.
  config = parse_attack(spec, EPS, 2 / 255)
  clean = _accuracy(toy, toy.x)
  adv = _accuracy(toy, attacks.generate(toy.model_fn, toy.x, toy.y, config))
  assert adv <= clean - 0.5, (config.label(), clean, adv)


def test_pgd_not_weaker_than_fgsm(toy):
  eps = 4 / 255  # where the toy model is partly robust, so the comparison means something
  fgsm = _accuracy(toy, attacks.generate(toy.model_fn, toy.x, toy.y, AttackConfig("fgsm", eps=eps)))
  pgd = _accuracy(toy, attacks.generate(
      toy.model_fn, toy.x, toy.y, AttackConfig("pgd", eps=eps, step_size=1 / 255, steps=20)))
  assert pgd <= fgsm + 0.1, (fgsm, pgd)


@pytest.mark.parametrize("name", ["pgd", "cw_inf"])
def test_restarts_never_weaker_than_single_run(toy, name):
  single_cfg = AttackConfig(name, eps=4 / 255, step_size=1 / 255, steps=5)
  multi_cfg = AttackConfig(name, eps=4 / 255, step_size=1 / 255, steps=5, restarts=4)
  # Same seed: the first restart is the single run, so every example it fools stays fooled.
  tf.random.set_seed(123)
  single = np.argmax(toy.model_fn(attacks.generate(toy.model_fn, toy.x, toy.y, single_cfg)), -1)
  tf.random.set_seed(123)
  x_multi = attacks.generate(toy.model_fn, toy.x, toy.y, multi_cfg)
  multi = np.argmax(toy.model_fn(x_multi), -1)
  _assert_valid(x_multi, toy.x, multi_cfg)
  assert np.mean(single == toy.y) < 1.0  # not trivially robust
  assert np.all((single != toy.y) <= (multi != toy.y))
  assert np.mean(multi == toy.y) <= np.mean(single == toy.y)


@pytest.mark.parametrize("config", [
    AttackConfig("pgd", steps=3, restarts=2), AttackConfig("mifgsm", steps=3),
    AttackConfig("trades_kl", steps=3)], ids=lambda c: c.name)
def test_generate_inside_tf_function(toy, config):
  @tf.function
  def attack(images, labels):
    target = tf.nn.softmax(toy.model_fn(images)) if config.name == "trades_kl" else labels
    return attacks.generate(toy.model_fn, images, target, config)

  x_adv = attack(tf.constant(toy.x), tf.constant(toy.y))
  assert _assert_valid(x_adv, toy.x, config).max() > 0


@pytest.mark.parametrize("config", [AttackConfig("pgd", steps=3), AttackConfig("trades_kl", steps=3)],
                         ids=lambda c: c.name)
def test_generate_under_mirrored_strategy(toy, config):
  if len(tf.config.list_logical_devices("CPU")) < 2:
    pytest.skip("needs the two logical CPU devices set up by conftest.py")
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  dataset = tf.data.Dataset.from_tensor_slices((toy.x, toy.y)).batch(32)
  images, labels = next(iter(strategy.experimental_distribute_dataset(dataset)))

  def replica_fn(xb, yb):
    target = tf.nn.softmax(toy.model_fn(xb)) if config.name == "trades_kl" else yb
    return attacks.generate(toy.model_fn, xb, target, config), xb

  x_adv, x_seen = tf.function(lambda a, b: strategy.run(replica_fn, args=(a, b)))(images, labels)
  parts = strategy.experimental_local_results(x_adv)
  assert len(parts) == 2
  x_adv = np.concatenate([p.numpy() for p in parts])
  x_seen = np.concatenate([p.numpy() for p in strategy.experimental_local_results(x_seen)])
  assert _assert_valid(x_adv, x_seen, config).max() > 0


def test_trades_kl_increases_kl_beyond_random_noise(toy):
  config = AttackConfig("trades_kl", eps=EPS, step_size=2 / 255, steps=10)
  clean_probs = tf.nn.softmax(toy.model_fn(toy.x))
  x_adv = attacks.generate(toy.model_fn, toy.x, clean_probs, config)
  _assert_valid(x_adv, toy.x, config)
  noise = np.random.default_rng(3).choice([-EPS, EPS], size=toy.x.shape).astype("float32")
  x_noise = np.clip(toy.x + noise, 0, 1)
  kl_adv = float(tf.reduce_mean(attacks.trades_kl_loss(clean_probs, toy.model_fn(x_adv))))
  kl_noise = float(tf.reduce_mean(attacks.trades_kl_loss(clean_probs, toy.model_fn(x_noise))))
  assert kl_adv > 0.1 and kl_adv > 3 * kl_noise, (kl_adv, kl_noise)


@pytest.mark.parametrize("name, y_kind, match", [
    ("pgd", "one_hot", "TRUE integer labels"),
    ("trades_kl", "labels", "clean class probabilities"),
])
def test_generate_rejects_wrong_targets(toy, name, y_kind, match):
  y = np.eye(toy.num_classes, dtype="float32")[toy.y] if y_kind == "one_hot" else toy.y
  with pytest.raises(UserInputError, match=match):
    attacks.generate(toy.model_fn, toy.x, y, AttackConfig(name, steps=2))


def test_margin_and_kl_losses():
  logits = tf.constant([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
  np.testing.assert_allclose(attacks.margin_loss(tf.constant([0, 1]), logits).numpy(), [-1.0, 1.0])
  p = tf.constant([[0.5, 0.5, 0.0]])
  np.testing.assert_allclose(attacks.trades_kl_loss(p, tf.math.log([[0.5, 0.5, 1e-9]])).numpy(), [0.0],
                             atol=1e-6)
  # KL([.5,.5] || [.25,.75]) = .5 ln 2 + .5 ln(2/3)
  expected = 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)
  np.testing.assert_allclose(attacks.trades_kl_loss([[0.5, 0.5]], tf.math.log([[0.25, 0.75]])).numpy(),
                             [expected], rtol=1e-5)


def test_input_gradient_status_and_zero_gradient_wrapper(toy):
  rounded = lambda images: toy.model_fn(tf.round(images * 255.0) / 255.0)  # noqa: E731
  frozen = lambda images: toy.model_fn(tf.stop_gradient(images) + 0.0 * images)  # noqa: E731
  x = toy.x[:4]
  assert [attacks.input_gradient_status(fn, x) for fn in (toy.model_fn, frozen, rounded)] == [
      "present", "zero", "absent"]
  wrapped = attacks.with_zero_gradient(rounded)
  np.testing.assert_array_equal(wrapped(x).numpy(), rounded(x).numpy())
  assert attacks.input_gradient_status(wrapped, x) == "zero"
  # cleverhans failed with AttributeError on the None gradient; with the zero one FGSM runs and stays put.
  x_adv = attacks.generate(wrapped, x, toy.y[:4], AttackConfig("fgsm", eps=EPS))
  np.testing.assert_array_equal(np.asarray(x_adv), x)
