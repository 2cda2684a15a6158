"""Retraining: child from a genotype, objectives, tutor-map ablations, warm start, bad input."""

import json
import re

import keras
import numpy as np
import pytest
from absl import flags

import helpers
from rnascl_tf import retrain as retrain_entry
from rnascl_tf.models import cost as cost_lib
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.distill import losses
from rnascl_tf.stages import retrain as retraining
from rnascl_tf.stages import search as searching
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig
from rnascl_tf.data import load_splits
from rnascl_tf.configs import DataConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.robust.trainer import RobustTrainer
from rnascl_tf.configs import OBJECTIVES, DistillConfig, RetrainConfig, SearchConfig, TeacherConfig

DATA = DataConfig(dataset="digits", image_size=8, batch_size=16, max_train_examples=200, max_test_examples=32)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  root = tmp_path_factory.mktemp("search")
  teacher = helpers.save_tiny_teacher(str(root / "teacher.keras"))
  searching.run_search(
      run=RunConfig(model_dir=str(root / "search"), epochs=1, steps_per_epoch=2, verbose=0), data_cfg=DATA,
      optim_cfg=OptimConfig(optimizer="adam", learning_rate=0.004),
      cfg=SearchConfig(arch_weight_decay=0.0, tau_decay=0.1), teacher=TeacherConfig(path=teacher))
  return root, str(root / "search" / "genotype.json")


def test_child_from_genotype_has_the_genotype_cost(searched):
  _, path = searched
  g = genotype_lib.load_genotype(path)
  child = retraining.build_child(g, load_splits(DATA).info, path)
  exact = cost_lib.count_model_cost(child, (8, 8, 1))
  assert exact == g["cost"]["exact_child"]
  assert exact["params"] == child.count_params()
  assert child.student_layer_names == [s["name"] for s in g["student_layers"]]


@pytest.mark.parametrize("kind, expected", [
    ("same_depth", lambda ns, nt: [round(i * (nt - 1) / (ns - 1)) for i in range(ns)]),
    ("last_layer", lambda ns, nt: [nt - 1] * ns),
])
def test_ablation_maps(searched, kind, expected):
  g = genotype_lib.load_genotype(searched[1])
  ns, nt = len(g["student_layers"]), len(g["teacher"]["tap_layers"])
  assert genotype_lib.ablation_tutor_map(g, kind) == expected(ns, nt)


def test_searched_and_random_maps(searched):
  g = genotype_lib.load_genotype(searched[1])
  assert genotype_lib.ablation_tutor_map(g, "searched") == [int(np.argmax(s["tutor_probs"])) for s in g["student_layers"]]
  r1, r2 = (genotype_lib.ablation_tutor_map(g, "random", seed=s) for s in (1, 2))
  assert r1 == genotype_lib.ablation_tutor_map(g, "random", seed=1) and r1 != r2
  assert all(0 <= j < len(g["teacher"]["tap_layers"]) for j in r1)
  with pytest.raises(UserInputError, match="--tutor_map"):
    genotype_lib.ablation_tutor_map(g, "best_guess")


def test_ce_kd_loss_is_ce_plus_kl_plus_fixed_tutor_cl(searched):
  # With a zero learning rate the logged loss must equal the hand-composed objective.
  root, path = searched
  g = genotype_lib.load_genotype(path)
  info = load_splits(DATA).info
  child = retraining.build_child(g, info, path)
  _, taps = teacher_io.load_teacher(str(root / "teacher.keras"), info.input_shape, info.num_classes,
                                    [t["name"] for t in g["teacher"]["tap_layers"]])
  tmap = genotype_lib.ablation_tutor_map(g, "same_depth")
  distill = DistillConfig(lambda_kd=0.7, kd_temperature=2.0, gamma_cl=3.0, cl_grid=4, tutor_map=tmap)
  trainer = RobustTrainer(child, RobustConfig(mode="standard"), teacher=taps, distill=distill)
  opt = keras.optimizers.SGD(0.0)
  opt.build(child.trainable_variables)
  trainer.compile(optimizer=opt)
  rng = np.random.default_rng(0)
  x, y = rng.uniform(0, 1, (16, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 16).astype("int32")
  logged = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
  logits, s_taps = child.call_with_taps(x, training=True)
  t_logits, t_acts = taps(x)
  ce = losses.cross_entropy(y, logits)
  kl = losses.kd_kl(t_logits, logits, 2.0)
  cl = losses.fixed_tutor_loss(losses.layer_distances(s_taps, t_acts, 4), tmap)
  assert logged["loss"][0] == pytest.approx(float(np.mean(ce + 0.7 * kl + 3.0 * cl)), rel=1e-4)
  assert logged["kl"][0] == pytest.approx(float(np.mean(kl)), rel=1e-4)
  assert logged["cl"][0] == pytest.approx(float(np.mean(cl)), rel=1e-4)


# The presets of earlier versions, one teacher-free baseline and the robust distiller with the most
# machinery (its attack runs the teacher); the losses of all are tested in tests/robust/test_objectives.py.
@pytest.mark.parametrize("objective", ["ce", "logit_kd", "ce_kd", "trades_kd", "pgd_at_kd", "trades", "adaad"])
def test_every_objective_trains_and_reports(searched, tmp_path, objective):
  root, path = searched
  spec = OBJECTIVES[objective]
  mode, use_kl, use_cl = spec.mode, spec.kd_term, spec.gamma_cl > 0
  s = retraining.retrain(
      run=RunConfig(model_dir=str(tmp_path), epochs=1, steps_per_epoch=2, verbose=0), data_cfg=DATA,
      robust=RobustConfig(eps=0.1, step_size=0.05, steps=2, val_attack_steps=2, val_examples=16,
                          test_attack_steps=2),
      optim_cfg=OptimConfig(learning_rate=0.05), retrain_cfg=RetrainConfig(genotype=path, objective=objective),
      distill=DistillConfig(cl_grid=4), teacher=TeacherConfig())
  hist = s["history"][0]
  assert ("kl" in hist) == use_kl and ("cl" in hist) == use_cl
  assert ("adv_acc" in hist) == (mode != "standard")
  uses_teacher = use_kl or spec.base_needs_teacher
  assert s["adv_mode"] == mode and s["teacher"] == (str(root / "teacher.keras") if uses_teacher else None)
  assert s["base_loss"] == spec.loss and s["distill_terms"]["gamma_cl"] == (1.0 if use_cl else 0.0)
  assert 0 <= s["test_best"]["pgd"] <= s["test_best"]["clean"] <= 1
  saved = json.loads((tmp_path / "train_summary.json").read_text())
  assert saved["params"] == s["params"] and (tmp_path / "student.keras").exists()
  assert (tmp_path / "student_last.keras").exists()


def test_warm_start_copies_supernet_weights(searched, tmp_path):
  root, path = searched
  g = genotype_lib.load_genotype(path)
  info = load_splits(DATA).info
  scratch = retraining.build_child(g, info, path)
  warm = retraining.build_child(g, info, path)
  retraining.warm_start_from_search(warm, g, info, str(root / "search"))
  w_stem = warm.weight_layers()["stem"].kernel.numpy()
  assert not np.allclose(w_stem, scratch.weight_layers()["stem"].kernel.numpy())
  with pytest.raises(UserInputError, match="--warm_start_search_dir"):
    retraining.warm_start_from_search(warm, g, info, str(tmp_path))


def test_genotype_of_other_data_is_refused(searched, tmp_path):
  _, path = searched
  with pytest.raises(UserInputError, match="searched for inputs"):
    retraining.retrain(
        run=RunConfig(model_dir=str(tmp_path), epochs=1, verbose=0),
        data_cfg=DataConfig(dataset="digits", image_size=12, batch_size=16), robust=RobustConfig(mode="standard"),
        optim_cfg=OptimConfig(), retrain_cfg=RetrainConfig(genotype=path, objective="ce"),
        distill=DistillConfig(cl_grid=4), teacher=TeacherConfig())


def _short_tutor_map(g):
  g["student_layers"].pop()


def _teacher_moved(g):
  g["teacher"]["path"] = "/nonexistent/teacher.keras"


_BAD_CASES = {
    "short_tutor_map": (_short_tutor_map, [], r"genotype '.*g\.json': 'student_layers' does not match the student "
                        r"layers of the child \(.*; 9 listed, 10 in the child\): missing \['s2b1/project'\]"),
    "teacher_moved": (_teacher_moved, [], r"teacher recorded in genotype '.*g\.json': '/nonexistent/teacher\.keras' "
                      r"does not exist \(moved or deleted\?\); pass --teacher_path="),
    "kd_temperature_0": (None, ["--kd_temperature=0"], r"--kd_temperature must be > 0"),
    "text_file_teacher": (None, ["--teacher_path={tmp}/notes.keras"],
                          r"teacher \(--teacher_path\): '.*notes\.keras' is not a valid \.keras archive"),
}


def _bad_case(searched, tmp_path, name):
  """Flags of a bad retraining input, and a snapshot of what must not change: (args, message, snapshot)."""
  mutate, args, message = _BAD_CASES[name]
  g = json.loads(open(searched[1]).read())
  if mutate:
    mutate(g)
  path = tmp_path / "g.json"
  path.write_text(json.dumps(g))
  (tmp_path / "notes.keras").write_text("not a model\n")
  args = [f"--genotype={path}", f"--model_dir={tmp_path / 'out'}", "--dataset=digits", "--image_size=8",
          "--epochs=1", *(a.format(tmp=tmp_path) for a in args)]
  return args, message, lambda: (path.read_bytes(), path.stat().st_mtime_ns, (tmp_path / "out").exists())


@pytest.mark.parametrize("name", sorted(_BAD_CASES))
def test_bad_genotype_or_teacher_is_refused_before_any_work(searched, tmp_path, name):
  args, message, snapshot = _bad_case(searched, tmp_path, name)
  before = snapshot()
  fv = flags.FlagValues()
  retrain_entry.define_flags(fv)
  fv(["retrain", *args])
  with pytest.raises(UserInputError) as info:
    retrain_entry.main(["retrain"], fv)
  assert re.search(message, str(info.value)) and "\n" not in str(info.value), str(info.value)
  assert snapshot() == before and before[2] is False


def test_cli_bad_genotype_exits_2_with_one_line(searched, tmp_path):
  args, message, snapshot = _bad_case(searched, tmp_path, "short_tutor_map")
  before = snapshot()
  proc = helpers.run_cli("rnascl_tf.retrain", *args, check=False)
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert re.search(message, errors[0]), errors[0]
  assert snapshot() == before


@pytest.mark.parametrize("architecture, arch_seed, mflops", [
    ("uniform", 0, 0.0), ("random", 1, 0.0), ("random", 2, 0.0), ("random", 5, 0.09), ("resnet20", 0, 0.16016)])
def test_baseline_students_match_the_target_flops(searched, architecture, arch_seed, mflops):
  # mflops 0: the searched child's FLOPs; ResNet-20 at 8x8 cannot get near the tiny child's 71,504, so
  # it gets its own FLOPs at width 1/4 (160,160) as the target.
  _, path = searched
  g = genotype_lib.load_genotype(path)
  info = load_splits(DATA).info
  target = mflops * 1e6 or g["cost"]["exact_child"]["flops"]
  cfg = RetrainConfig(genotype=path, architecture=architecture, arch_seed=arch_seed, arch_target_mflops=mflops)
  net, arch = retraining.build_student(g, info, cfg, path)
  counted = cost_lib.count_model_cost(net, info.input_shape)
  assert arch["kind"] == architecture and (arch["flops"], arch["params"]) == (counted["flops"], counted["params"])
  assert abs(counted["flops"] - target) <= 0.03 * target


def test_resnet20_student_trains_with_a_proportional_tutor_map(searched, tmp_path):
  root, path = searched
  common = dict(run=RunConfig(model_dir=str(tmp_path), epochs=1, steps_per_epoch=2, verbose=0), data_cfg=DATA,
                robust=RobustConfig(eps=0.1, step_size=0.05, steps=1, val_attack_steps=1, val_examples=16,
                                    test_attack_steps=1),
                optim_cfg=OptimConfig(learning_rate=0.05), distill=DistillConfig(gamma_cl=1.0, cl_grid=4),
                teacher=TeacherConfig())
  with pytest.raises(UserInputError, match="no searched tutor map"):
    retraining.retrain(retrain_cfg=RetrainConfig(genotype=path, objective="rslad", architecture="resnet20",
                                                 arch_target_mflops=0.16016), **common)
  s = retraining.retrain(retrain_cfg=RetrainConfig(genotype=path, objective="rslad", architecture="resnet20",
                                                   arch_target_mflops=0.16016, tutor_map="same_depth"), **common)
  assert s["architecture"]["kind"] == "resnet20" and s["architecture"]["widths"] == [4, 8, 16]
  assert s["flops"] == s["architecture"]["flops"] == 160160
  n_t = len(genotype_lib.load_genotype(path)["teacher"]["tap_layers"])
  assert [m["teacher"] for m in s["tutor_map"]] == [
      genotype_lib.load_genotype(path)["teacher"]["tap_layers"][round(i * (n_t - 1) / 18)]["name"] for i in range(19)]
  assert s["history"][0]["cl"] > 0
