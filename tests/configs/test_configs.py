"""rnascl_tf.configs: validation once in the constructors, the temperature schedule, fingerprints."""

import math
import subprocess
import sys

import pytest

import helpers
from rnascl_tf import configs
from rnascl_tf.configs import (DataConfig, DistillConfig, EvalConfig, OptimConfig, RetrainConfig, RobustConfig,
                               RunConfig, SearchConfig)
from rnascl_tf.errors import UserInputError


def test_configs_import_without_tensorflow():
  code = "import sys, rnascl_tf.configs; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("make, flag", [
    (lambda: RobustConfig(eps=1.5), "--eps"),
    (lambda: RobustConfig(eps=float("nan")), "--eps"),
    (lambda: RobustConfig(step_size=0.0), "--step_size"),
    (lambda: EvalConfig(eps=-0.1), "--eps"),
    (lambda: EvalConfig(step_size=0.0), "--step_size"),
    (lambda: EvalConfig(eps_sweep=(2.0,)), "--eps_sweep"),
    (lambda: DistillConfig(gamma_cl=-1.0), "--gamma_cl"),
    (lambda: DistillConfig(lambda_kd=-0.5), "--lambda_kd"),
    (lambda: DistillConfig(kd_temperature=0.0), "--kd_temperature"),
    (lambda: DistillConfig(cl_grid=0), "--cl_grid"),
    (lambda: SearchConfig(tau_min=0.0), "--tau_min"),
    (lambda: SearchConfig(tau0=0.05), "--tau0"),
    (lambda: SearchConfig(student_layers="some"), "--student_layers"),
    (lambda: RetrainConfig(genotype=""), "--genotype"),
    (lambda: RetrainConfig(genotype="g.json", objective="magic"), "--objective"),
    (lambda: RetrainConfig(genotype="g.json", tutor_map="diagonal"), "--tutor_map"),
    (lambda: OptimConfig(learning_rate=0.0), "--learning_rate"),
    (lambda: RunConfig(model_dir=""), "--model_dir"),
    (lambda: RunConfig(model_dir="a", verbose=3), "--verbose"),
    (lambda: RunConfig(model_dir="a", verbose="bar"), "--verbose"),
    (lambda: DataConfig(dataset="mnist"), "--dataset"),
])
def test_bad_values_name_their_flag(make, flag):
  with pytest.raises(UserInputError, match=flag):
    make()


def test_auto_verbosity_is_a_bar_on_a_terminal_and_one_line_per_epoch_elsewhere(monkeypatch):
  auto = RunConfig(model_dir="a")
  assert auto.verbose == "auto"
  monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
  assert auto.keras_verbose() == 1 and RunConfig(model_dir="a", verbose=2).keras_verbose() == 2
  monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # A pipe or a log file: no bar.
  assert auto.keras_verbose() == 2 and RunConfig(model_dir="a", verbose=1).keras_verbose() == 1


def test_one_pixel_rule_for_every_budget():
  # The same value is accepted or refused the same way by every config that holds a budget.
  for value, ok in ((0.0, True), (8 / 255, True), (1.0, True), (1.0001, False), (-1e-9, False)):
    for make in (lambda v: RobustConfig(eps=v), lambda v: EvalConfig(eps=v)):
      if ok:
        make(value)
      else:
        with pytest.raises(UserInputError, match="--eps"):
          make(value)


@pytest.mark.parametrize("epochs", [1, 2, 8])
def test_auto_temperature_reaches_the_floor_at_the_last_epoch(epochs):
  cfg = SearchConfig(tau0=5.0, tau_min=0.2)
  assert cfg.temperature(0, epochs) == pytest.approx(5.0)
  if epochs > 1:
    assert cfg.temperature(epochs - 1, epochs) == pytest.approx(0.2)
    assert cfg.decay_per_epoch(epochs) == pytest.approx(math.log(5.0 / 0.2) / (epochs - 1))
  else:
    assert cfg.decay_per_epoch(epochs) == 0.0


def test_fixed_temperature_decay_and_floor():
  cfg = SearchConfig(tau0=4.0, tau_decay=0.5, tau_min=1.0)
  assert [round(cfg.temperature(e, 10), 6) for e in range(4)] == [4.0, round(4 * math.exp(-0.5), 6),
                                                                  round(4 * math.exp(-1.0), 6), 1.0]


@pytest.mark.parametrize("objective, mode, kl, cl, teacher", [
    ("ce", "standard", 0.0, 0.0, False), ("logit_kd", "standard", 0.7, 0.0, True),
    ("ce_kd", "standard", 0.7, 1.0, True), ("trades_kd", "trades", 0.7, 1.0, True), ("pgd_at_kd", "pgd", 0.7, 1.0, True),
    ("trades", "trades", 0.0, 0.0, False), ("pgd_at", "pgd", 0.0, 0.0, False), ("ard", "pgd", 0.0, 0.0, True),
    ("rslad", "trades", 0.0, 0.0, True), ("adaad", "trades", 0.0, 0.0, True)])
def test_objectives_set_mode_and_preset_terms(objective, mode, kl, cl, teacher):
  # An unset --gamma_cl (None) takes the objective's preset; lambda_kd only weighs the *_kd presets.
  cfg = RetrainConfig(genotype="g.json", objective=objective)
  distill = cfg.distill_for_objective(DistillConfig(lambda_kd=0.7, cl_grid=4))
  assert cfg.adv_mode == mode and (distill.lambda_kd, distill.gamma_cl, distill.cl_grid) == (kl, cl, 4)
  assert cfg.needs_teacher(distill) == teacher


@pytest.mark.parametrize("objective", ["logit_kd", "ce_kd", "ard", "rslad", "adaad"])
def test_an_explicit_cross_layer_weight_composes_with_any_teacher_objective(objective):
  cfg = RetrainConfig(genotype="g.json", objective=objective)
  assert cfg.distill_for_objective(DistillConfig(gamma_cl=2.5)).gamma_cl == 2.5
  assert cfg.distill_for_objective(DistillConfig(gamma_cl=0.0)).gamma_cl == 0.0


@pytest.mark.parametrize("objective", ["ce", "trades", "pgd_at"])
def test_a_cross_layer_weight_without_a_teacher_is_refused(objective):
  cfg = RetrainConfig(genotype="g.json", objective=objective)
  with pytest.raises(UserInputError, match=f"--gamma_cl=2: --objective={objective} has no teacher"):
    cfg.distill_for_objective(DistillConfig(gamma_cl=2.0))


@pytest.mark.parametrize("field, value, flag", [
    ("ard_alpha", 1.5, "--ard_alpha"), ("ard_alpha", -0.1, "--ard_alpha"), ("rslad_adv_weight", 2.0, "--rslad_adv_weight"),
    ("adaad_alpha", float("nan"), "--adaad_alpha"), ("ard_temperature", 0.0, "--ard_temperature"),
    ("architecture", "vgg", "--architecture"), ("arch_target_mflops", -1.0, "--arch_target_mflops")])
def test_nonsensical_objective_settings_are_refused(field, value, flag):
  with pytest.raises(UserInputError, match=flag):
    RetrainConfig(genotype="g.json", objective="ard", **{field: value})


def test_search_keeps_its_cross_layer_term_when_unset():
  assert SearchConfig().distill.gamma_cl == 1.0
  assert SearchConfig(distill=DistillConfig(gamma_cl=0.25)).distill.gamma_cl == 0.25


def test_fingerprint_has_every_field_but_the_resumable_ones():
  run = RunConfig(model_dir="runs/a", epochs=3, seed=7, sync_bn=True)
  search = SearchConfig(distill=DistillConfig(gamma_cl=2.0))
  fp = configs.fingerprint(run=run, search=search, data=DataConfig(cache_dir="/tmp/c"), teacher=None)
  assert fp["run.seed"] == 7 and fp["run.sync_bn"] is True and fp["search.distill.gamma_cl"] == 2.0
  assert fp["teacher"] is None and fp["search.tau0"] == 5.0
  assert not {"run.epochs", "run.model_dir", "run.verbose", "data.cache_dir"} & set(fp)
  # Every field of the search config is in (a field added later cannot be forgotten).
  assert {k for k in fp if k.startswith("search.") and not k.startswith("search.distill.")} == {
      f"search.{f}" for f in SearchConfig.__dataclass_fields__ if f != "distill"}


def test_fingerprint_differences_current_and_legacy():
  now = configs.fingerprint(robust=RobustConfig(mode="pgd", eps=8 / 255), data=DataConfig(seed=1))
  assert configs.fingerprint_differences(dict(now), now) == []
  changed = {**now, "robust.eps": 4 / 255}
  assert configs.fingerprint_differences(changed, now) == [f"robust.eps: saved {4 / 255!r}, now {8 / 255!r}"]
  # Run folders of earlier versions recorded flag names and the flags' text: same settings resume...
  legacy = {"adv_mode": "pgd", "eps": "8/255", "seed": 1, "flag_of_old_times": 3}
  assert configs.fingerprint_differences(legacy, now) == []
  # ...other settings are refused, named by their flag.
  assert configs.fingerprint_differences({**legacy, "adv_mode": "trades"}, now) == [
      "adv_mode: saved 'trades', now 'pgd'"]
  assert configs.fingerprint_differences({**legacy, "eps": "4/255"}, now)[0].startswith("eps: saved '4/255'")
