"""Tests for rnascl_tf.robust.attack_specs: attack configs, their labels and the short specs of the command line."""

import pytest

from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.attack_specs import AttackConfig, parse_attack

EPS = 8 / 255


@pytest.mark.parametrize("spec, name, steps, restarts", [
    ("pgd20", "pgd", 20, 1),
    ("PGD-100", "pgd", 100, 1),
    ("pgd20x5", "pgd", 20, 5),
    ("fgsm", "fgsm", 1, 1),
    ("mifgsm20", "mifgsm", 20, 1),
    ("cw20", "cw_inf", 20, 1),
    ("cw-30x2", "cw_inf", 30, 2),
    ("trades10", "trades_kl", 10, 1),
])
def test_parse_attack_round_trip(spec, name, steps, restarts):
  config = parse_attack(spec, EPS, 2 / 255)
  assert (config.name, config.steps, config.restarts) == (name, steps, restarts)
  assert (config.eps, config.step_size, config.norm, config.rand_init) == (EPS, 2 / 255, "inf", True)
  assert parse_attack(config.spec(), EPS, 2 / 255) == config
  assert parse_attack(config.spec(), EPS, 2 / 255).label() == config.label()


@pytest.mark.parametrize("spec", ["", "pgd", "fgsm10", "fgsmx2", "pgd0", "pgd20x0", "mifgsm20x3",
                                  "autoattack", "pgd20y", "pgd20x"])
def test_parse_attack_rejects_bad_specs(spec):
  with pytest.raises(UserInputError, match=r"attack spec .*valid forms: fgsm, pgd<steps>"):
    parse_attack(spec, EPS, 2 / 255)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="autoattack"), "name"),
    (dict(name="pgd", eps=-0.1), "eps"),
    (dict(name="pgd", eps=float("nan")), "eps"),
    (dict(name="pgd", steps=0), "steps"),
    (dict(name="pgd", step_size=0.0), "step_size"),
    (dict(name="pgd", norm="l1"), "norm"),
    (dict(name="mifgsm", norm="l2"), "norm"),
    (dict(name="pgd", restarts=0), "restarts"),
    (dict(name="fgsm", restarts=2), "restarts"),
    (dict(name="pgd", rand_init=False, restarts=2), "restarts"),
])
def test_config_validation(kwargs, match):
  with pytest.raises(UserInputError, match=match):
    AttackConfig(**kwargs)


@pytest.mark.parametrize("config, label", [
    (AttackConfig("pgd", steps=20), "PGD-20 (Linf, eps=8/255, step=2/255, 1 restart, cleverhans)"),
    (AttackConfig("pgd", steps=20, restarts=5),
     "PGD-20 (Linf, eps=8/255, step=2/255, 5 restarts, cleverhans)"),
    (AttackConfig("pgd", eps=1 / 255, steps=7), "PGD-7 (Linf, eps=1/255, step=1/255, 1 restart, cleverhans)"),
    (AttackConfig("pgd", eps=0.5, step_size=0.1, norm="l2", rand_init=False),
     "PGD-10 (L2, eps=0.5, step=0.1, no random start, 1 restart, cleverhans)"),
    (AttackConfig("fgsm"), "FGSM (Linf, eps=8/255, cleverhans)"),
    (AttackConfig("mifgsm", steps=20), "MI-FGSM-20 (Linf, eps=8/255, step=2/255, decay=1, cleverhans)"),
    (AttackConfig("cw_inf", steps=20),
     "CW-inf-20 (Linf, eps=8/255, step=2/255, 1 restart, margin loss, cleverhans PGD)"),
    (AttackConfig("trades_kl"),
     "TRADES-KL-PGD-10 (Linf, eps=8/255, step=2/255, start=x+U(+-0.001), cleverhans PGD)"),
])
def test_label_names_settings_and_backend(config, label):
  assert config.label() == label
