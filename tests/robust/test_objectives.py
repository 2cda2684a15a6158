"""Robust objectives: each loss equals its paper's formula computed by hand, and each trains a step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import helpers
from rnascl_tf.configs import DistillConfig, RobustConfig
from rnascl_tf.distill import losses
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.robust import attacks
from rnascl_tf.robust import objectives as obj
from rnascl_tf.robust.trainer import RobustTrainer

# A toy batch of two examples, three classes.
Y = np.array([0, 2])
S_CLEAN = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]], "float32")
S_ADV = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], "float32")
T_CLEAN = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], "float32")
T_ADV = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 2.0]], "float32")


def _softmax(z, t=1.0):
  e = np.exp(np.asarray(z, np.float64) / t)
  return e / e.sum(-1, keepdims=True)


def _ce(z, y):
  return -np.log(_softmax(z)[np.arange(len(y)), y])


def _kl(p_logits, q_logits, t=1.0):
  """KL(p || q) = sum_k p_k log(p_k / q_k): the first argument is the target (the teacher)."""
  p, q = _softmax(p_logits, t), _softmax(q_logits, t)
  return (p * np.log(p / q)).sum(-1)


def test_hand_kl_has_the_teacher_first():
  # KL is not symmetric: a swapped argument order would give another number for this pair.
  assert not np.allclose(_kl(T_CLEAN, S_ADV), _kl(S_ADV, T_CLEAN))
  # Example 0 by hand: p = softmax(2, 0, 0) = (e^2, 1, 1) / (e^2 + 2); q = softmax(0, 1, 0).
  p = np.array([np.e ** 2, 1, 1]) / (np.e ** 2 + 2)
  q = np.array([1, np.e, 1]) / (np.e + 2)
  assert _kl(T_CLEAN, S_ADV)[0] == pytest.approx((p * np.log(p / q)).sum(), rel=1e-12)


W = obj.Weights(trades_beta=6.0, ard_alpha=0.7, ard_temperature=4.0, rslad_adv_weight=5 / 6, adaad_alpha=0.6)
CASES = {
    "ce": _ce(S_CLEAN, Y),
    "pgd_at": _ce(S_ADV, Y),
    "trades": _ce(S_CLEAN, Y) + 6.0 * _kl(S_CLEAN, S_ADV),
    # ARD: (1 - a) CE(S(x), y) + a t^2 KL(p_T(x) || p_S(x')) at temperature t.
    "ard": 0.3 * _ce(S_CLEAN, Y) + 0.7 * 16.0 * _kl(T_CLEAN, S_ADV, t=4.0),
    # RSLAD: the teacher's clean prediction is the target of both terms.
    "rslad": 5 / 6 * _kl(T_CLEAN, S_ADV) + 1 / 6 * _kl(T_CLEAN, S_CLEAN),
    # AdaAD: the adversarial term's target is the teacher at x'.
    "adaad": 0.6 * _kl(T_ADV, S_ADV) + 0.4 * _kl(T_CLEAN, S_CLEAN),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_equals_the_formula_computed_by_hand(name):
  got = obj.per_example_loss(name, Y, {"clean": S_CLEAN, "adv": S_ADV}, {"clean": T_CLEAN, "adv": T_ADV}, W)
  np.testing.assert_allclose(np.asarray(got), CASES[name], rtol=1e-5)


@pytest.mark.parametrize("name, weights, expected", [
    ("ard", obj.Weights(ard_alpha=1.0, ard_temperature=30.0), 900.0 * _kl(T_CLEAN, S_ADV, t=30.0)),
    ("rslad", obj.Weights(rslad_adv_weight=1.0), _kl(T_CLEAN, S_ADV)),
    ("adaad", obj.Weights(adaad_alpha=1.0), _kl(T_ADV, S_ADV)),
])
def test_paper_defaults_need_only_the_adversarial_student(name, weights, expected):
  # With the references' default weights the clean student term has weight 0: it is not evaluated.
  base = obj.base_loss(name)
  assert base.student_points(weights) == ("adv",)
  got = obj.per_example_loss(name, Y, {"adv": S_ADV}, {"clean": T_CLEAN, "adv": T_ADV}, weights)
  # At t = 30 the float32 KL is a small difference of logs: ~2e-4 relative rounding.
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-3)


def test_kd_points_state_where_distillation_looks():
  assert {n: b.kd_point for n, b in obj.BASE_LOSSES.items()} == {
      "ce": ("clean", "clean"), "pgd_at": ("adv", "adv"), "fast_at": ("adv", "adv"), "trades": ("clean", "clean"),
      "ard": ("adv", "clean"), "rslad": ("adv", "clean"), "adaad": ("adv", "adv")}


def test_disagreement_attack_loss_is_kl_teacher_first_and_differentiates_both():
  pair = tf.constant(np.concatenate([S_ADV, T_ADV], -1))
  np.testing.assert_allclose(attacks.disagreement_kl_loss(Y, pair).numpy(), _kl(T_ADV, S_ADV), rtol=1e-5)
  with tf.GradientTape() as tape:
    tape.watch(pair)
    loss = tf.reduce_sum(attacks.disagreement_kl_loss(Y, pair))
  grad = tape.gradient(loss, pair).numpy()
  assert np.abs(grad[:, :3]).sum() > 0 and np.abs(grad[:, 3:]).sum() > 0


def _data(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(0, 1, (n,) + helpers.SHAPE).astype("float32"),
          rng.integers(0, helpers.CLASSES, (n,)).astype("int32"))


def _taps(seed=1):
  t = helpers.tiny_teacher(seed=seed)
  return teacher_io.TeacherTaps(t, t.tap_names("conv")[:2])


def _trainer(objective, weights=obj.Weights(), gamma_cl=0.0, lr=0.05):
  net = helpers.tiny_child()
  taps = _taps()
  n_student = len(net.call_with_taps(np.zeros((1,) + helpers.SHAPE, "float32"))[1])
  distill = DistillConfig(lambda_kd=0.0, gamma_cl=gamma_cl, cl_grid=2, tutor_map=(0,) * n_student)
  trainer = RobustTrainer(net, RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=2), seed=0, teacher=taps,
                          distill=distill, objective=objective, weights=weights)
  opt = keras.optimizers.SGD(lr)
  opt.build(net.trainable_variables)
  trainer.compile(optimizer=opt)
  return trainer, net, taps


@pytest.mark.parametrize("objective, weights, gamma_cl, metrics", [
    ("ard", obj.Weights(), 0.0, {"loss", "adv_acc"}),
    ("ard", obj.Weights(ard_alpha=0.5), 1.0, {"loss", "acc", "adv_acc", "cl"}),
    ("rslad", obj.Weights(), 0.0, {"loss", "acc", "adv_acc"}),
    ("adaad", obj.Weights(), 1.0, {"loss", "adv_acc", "cl"}),
    ("trades", obj.Weights(), 0.0, {"loss", "acc", "adv_acc"}),
])
def test_objectives_train_a_step_and_log_what_they_compute(objective, weights, gamma_cl, metrics):
  trainer, net, _ = _trainer(objective, weights, gamma_cl)
  before = [v.numpy().copy() for v in net.trainable_variables]
  x, y = _data()
  hist = trainer.fit(x, y, batch_size=8, epochs=1, verbose=0).history
  assert set(hist) == metrics
  assert np.isfinite(hist["loss"][0]) and hist["loss"][0] > 0
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, net.trainable_variables))


@pytest.mark.parametrize("objective, attack_loss", [
    ("rslad", lambda s, t, x, xa: _kl(t(x), s(xa))),
    ("adaad", lambda s, t, x, xa: _kl(t(xa), s(xa))),
    ("ard", lambda s, t, x, xa: _ce(s(xa), Y_ATTACK)),
])
def test_attack_ascends_the_objectives_inner_loss_within_eps(objective, attack_loss):
  trainer, net, taps = _trainer(objective)
  x, _ = _data(8, seed=3)
  y = tf.constant(Y_ATTACK)
  s = lambda z: net(z, training=False).numpy()  # noqa: E731
  t = lambda z: taps(z)[0].numpy()  # noqa: E731
  clean_t = taps(x)[0] if objective == "rslad" else None
  x_adv = trainer.adversarial_examples(tf.constant(x), y, clean_t).numpy()
  assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  start = x + 0.0005  # ~ the small start the KL attacks begin from
  assert attack_loss(s, t, x, x_adv).mean() > attack_loss(s, t, x, start).mean()


Y_ATTACK = np.arange(8) % helpers.CLASSES


def test_objective_needing_a_teacher_refuses_to_run_without_one():
  with pytest.raises(ValueError, match="needs a teacher"):
    RobustTrainer(helpers.tiny_teacher(), RobustConfig(mode="pgd"), objective="rslad")


@pytest.mark.parametrize("objective", ["ard", "rslad", "adaad"])
def test_logged_loss_is_the_objective_plus_the_cross_layer_term(objective):
  # eps = 0 makes x' = x, so the objective can be recomposed by hand from one forward pass; a zero
  # learning rate keeps the weights those of that pass. The cross-layer term adds gamma * L_CL.
  weights = obj.Weights(ard_alpha=0.5, ard_temperature=2.0, rslad_adv_weight=5 / 6, adaad_alpha=0.6)
  net = helpers.tiny_child()
  taps = _taps()
  n_student = len(net.call_with_taps(np.zeros((1,) + helpers.SHAPE, "float32"))[1])
  tmap = tuple(i % 2 for i in range(n_student))
  trainer = RobustTrainer(net, RobustConfig(mode="pgd", eps=0.0, step_size=0.05, steps=1), teacher=taps,
                          distill=DistillConfig(lambda_kd=0.0, gamma_cl=2.0, cl_grid=2, tutor_map=tmap),
                          objective=objective, weights=weights)
  opt = keras.optimizers.SGD(0.0)
  opt.build(net.trainable_variables)
  trainer.compile(optimizer=opt)
  x, y = _data(8)
  logged = trainer.fit(x, y, batch_size=8, epochs=1, verbose=0).history
  logits, s_taps = net.call_with_taps(x, training=True)
  s, t = logits.numpy(), taps(x)[0].numpy()
  base = {"ard": 0.5 * _ce(s, y) + 0.5 * 4.0 * _kl(t, s, t=2.0), "rslad": _kl(t, s), "adaad": _kl(t, s)}[objective]
  cl = losses.fixed_tutor_loss(losses.layer_distances(s_taps, taps(x)[1], 2), tmap).numpy()
  assert logged["cl"][0] == pytest.approx(float(np.mean(cl)), rel=1e-4)
  assert logged["loss"][0] == pytest.approx(float(np.mean(base + 2.0 * cl)), rel=1e-4)
