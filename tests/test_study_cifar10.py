"""scripts/study_cifar10.py: the conditions table, argument checks, the atomic copy of a finished run,
and one tiny study on `digits` (teacher, search, two objectives, the Square check) resumed from its
results folder alone."""

import importlib
import json
import os
import sys

import pytest

import helpers
from rnascl_tf.errors import UserInputError

SCRIPT = os.path.join("scripts", "study_cifar10.py")


def _module():
  scripts = os.path.join(helpers.REPO, "scripts")
  if scripts not in sys.path:
    sys.path.insert(0, scripts)
  return importlib.import_module("study_cifar10")


def test_conditions_cover_every_question_of_the_report():
  mod = _module()
  assert set(mod.study_report.expected_conditions()) == set(mod.CONDITIONS)
  assert [c for c, (q, _, _) in mod.CONDITIONS.items() if q == "Q1"] == list(mod.Q1_OBJECTIVES)


@pytest.mark.parametrize("best, with_cl, name, seed, expected", [
    (None, None, "ard", 0, ("ard", ["--gamma_cl=0"])),
    (None, None, "best_cl", 0, (None, "needs --best_objective")),
    ("rslad", None, "best_cl_random", 1, ("rslad", ["--gamma_cl=1", "--tutor_map=random"])),
    ("rslad", None, "uniform", 1, (None, "needs --best_with_cl")),
    ("rslad", True, "random_arch", 2, ("rslad", ["--gamma_cl=1", "--architecture=random", "--arch_seed=2"])),
    ("adaad", False, "resnet20", 0, ("adaad", ["--gamma_cl=0", "--architecture=resnet20"])),
    ("trades", False, "best_cl", 0, (None, "trades has no teacher, so no cross-layer term")),
    ("trades", False, "uniform", 0, ("trades", ["--gamma_cl=0", "--architecture=uniform"])),
])
def test_condition_flags(best, with_cl, name, seed, expected):
  mod = _module()
  args = mod.parse_args(["--seeds=0", "--dataset=digits"] + ([f"--best_objective={best}"] if best else []) +
                        ([f"--best_with_cl={str(with_cl).lower()}"] if with_cl is not None else []))
  assert mod.condition_flags(args, name, seed) == expected
  final = {True: "best_cl", False: best, None: None}[with_cl]
  assert mod.final_condition(args) == final


@pytest.mark.parametrize("argv, match", [
    (["--conditions=ard,nope"], "unknown"), (["--seeds=,"], "at least one seed"),
    (["--best_objective=trades", "--best_with_cl=true"], "trades has no teacher"),
    (["--dataset=digits", "--seeds=0,1"], "digits has no separate test split"),
    (["--report_only", "--results_dir=/no/such/folder"], "--results_dir: no such folder")])
def test_bad_arguments_are_named(argv, match):
  with pytest.raises(UserInputError, match=match):
    _module().parse_args(argv)


@pytest.mark.parametrize("argv, match", [
    (["--seeds=0,x"], "argument --seeds: expected comma-separated integers, got '0,x'"),
    (["--best_with_cl=maybe"], "argument --best_with_cl: expected true or false")])
def test_malformed_values_are_usage_errors(argv, match, capsys):
  with pytest.raises(SystemExit) as e:
    _module().parse_args(argv)
  assert e.value.code == 2
  assert match in capsys.readouterr().err


def test_copy_run_replaces_the_folder_atomically(tmp_path):
  mod = _module()
  (tmp_path / "eval.json").write_text("{}")
  dest = tmp_path / "results" / "seed0" / "ard"
  dest.mkdir(parents=True)
  (dest / "stale.json").write_text("{}")  # An incomplete folder is replaced, not merged.
  mod.copy_run({"eval.json": str(tmp_path / "eval.json")}, str(dest), {"condition": "ard"})
  assert sorted(os.listdir(dest)) == ["eval.json", "run.json"] and os.listdir(dest.parent) == ["ard"]
  assert json.loads((dest / "run.json").read_text()) == {"condition": "ard"}
  assert not mod.complete(str(dest)) and mod.complete(str(dest), ("eval.json", "run.json"))


@pytest.mark.parametrize("extra, match", [
    (["--best_objective=rslad"], "--best_objective=rslad: .* was made with ard"),
    (["--best_objective=ard", "--flagfile_edit"], "flag lines of .*_train.flags' changed")])
def test_finished_runs_pin_the_budget_and_the_best_objective(tmp_path, extra, match):
  mod = _module()
  train = tmp_path / "x_train.flags"
  train.write_text("# header\n--epochs=6\n")
  record = tmp_path / "results" / "seed0" / "best_cl" / "run.json"
  record.parent.mkdir(parents=True)
  record.write_text(json.dumps({"best_objective": "ard", "budget": {"train": mod.flag_digest(str(train))}}))
  argv = ["--seeds=0", f"--results_dir={tmp_path / 'results'}", f"--flagfiles={tmp_path / 'x'}"]
  train.write_text("# another header: comments do not count\n--epochs=6\n")
  mod.check_recorded(mod.parse_args(argv + ["--best_objective=ard"]))  # unchanged: accepted
  if "--flagfile_edit" in extra:
    train.write_text("--epochs=7\n")
  with pytest.raises(UserInputError, match=match):
    mod.check_recorded(mod.parse_args(argv + [e for e in extra if e != "--flagfile_edit"]))


def test_a_failed_run_is_reported_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
  mod = _module()
  done = []

  class FakeStudy:
    def __init__(self, args, data_args):
      assert data_args == ["--dataset=digits"]

    def teacher(self):
      return "teacher.keras"

    def run_condition(self, name, seed):
      if name == "ard":
        raise UserInputError("stage train_ard failed (exit 1)")
      done.append(name)

    def run_square(self, seed):
      done.append("square")

  monkeypatch.setattr(mod, "Study", FakeStudy)
  status = mod.main(["--dataset=digits", "--seeds=0", "--conditions=trades,ard,rslad,square",
                     f"--results_dir={tmp_path}", f"--run_dir={tmp_path / 'run'}"])
  assert status == 1 and done == ["trades", "rslad", "square"]
  err = capsys.readouterr().err
  assert "1 run(s) failed" in err and "seed 0 ard: stage train_ard failed (exit 1)" in err
  assert (tmp_path / "results.md").is_file()  # the report is written anyway


DATA = ["--image_size=8", "--max_train_examples=300", "--max_test_examples=32"]
TINY = {
    "teacher": DATA + ["--teacher_arch=small_cnn", "--teacher_width=0.25", "--adv_mode=pgd", "--eps=0.1",
                       "--step_size=0.05", "--attack_steps=2", "--val_attack_steps=2", "--val_examples=16",
                       "--test_attack_steps=2", "--epochs=1", "--steps_per_epoch=3", "--batch_size=16", "--verbose=2"],
    "search": DATA + ["--search_space=tiny", "--epochs=2", "--steps_per_epoch=3", "--batch_size=16", "--verbose=2"],
    "train": DATA + ["--eps=0.1", "--step_size=0.05", "--attack_steps=2", "--val_attack_steps=2",
                     "--val_examples=16", "--test_attack_steps=2", "--epochs=1", "--steps_per_epoch=3",
                     "--batch_size=16", "--verbose=2"],
    "eval": DATA + ["--eps=0.1", "--step_size=0.05", "--attacks=pgd20", "--eps_sweep=0,0.1", "--autoattack=none",
                    "--blackbox_queries=0", "--per_example=true", "--batch_size=16"],
    "square": DATA + ["--eps=0.1", "--step_size=0.05", "--attacks=pgd20", "--eps_sweep=none", "--autoattack=none",
                      "--blackbox_queries=20", "--per_example=true", "--batch_size=16"],
}


@pytest.mark.slow  # 8 subprocess stages on digits at 8x8 and a rerun that runs nothing: ~3 min on 2 idle cores.
def test_tiny_study_end_to_end_and_resume_from_the_results_alone(tmp_path):
  for stage, lines in TINY.items():
    (tmp_path / f"tiny_{stage}.flags").write_text("\n".join(lines) + "\n")
  results = tmp_path / "results"
  args = ["--dataset=digits", "--seeds=0", "--conditions=trades,ard,square", "--best_objective=ard",
          "--best_with_cl=false", f"--results_dir={results}", f"--flagfiles={tmp_path / 'tiny'}"]
  proc = helpers.run_cli(SCRIPT, *args, f"--run_dir={tmp_path / 'run'}", timeout=900)
  assert proc.stdout.count("finished seed 0 ") == 3, proc.stdout
  assert sorted(os.listdir(results / "teacher")) == ["eval.json", "per_example.json", "teacher.json",
                                                     "teacher.keras", "teacher_manifest.json"]
  assert sorted(os.listdir(results / "seed0")) == ["ard", "search", "square", "trades"]
  for name in ("trades", "ard"):
    assert sorted(os.listdir(results / "seed0" / name)) == ["eval.json", "per_example.json", "run.json",
                                                            "train_summary.json"]
  run = json.loads((results / "seed0" / "ard" / "run.json").read_text())
  assert run["objective"] == "ard" and run["flags"] == ["--gamma_cl=0"] and run["seconds"]["train"] > 0
  square = json.loads((results / "seed0" / "square" / "run.json").read_text())
  assert square["model_condition"] == "ard"
  hashes = {json.loads((results / p / "per_example.json").read_text())["images_sha256"]
            for p in ("teacher", "seed0/trades", "seed0/ard", "seed0/square")}
  assert len(hashes) == 1  # every model saw the same 32 test images in the same order
  res = json.loads((results / "results.json").read_text())
  q1 = res["questions"]["Q1"]["comparisons"][0]
  assert (q1["a"], q1["b"]) == ("ard", "trades") and q1["worst"]["status"] == "ok" and q1["worst"]["images"] == 32
  assert res["square_check"][0]["model"] == "ard" and "broken_only_by_square" in res["square_check"][0]
  assert {"condition": "rslad", "seed": 0} in res["missing"] and not res["notes"]
  # A fresh run folder (a new checkout of the committed results) continues without redoing anything.
  proc = helpers.run_cli(SCRIPT, *args, f"--run_dir={tmp_path / 'fresh'}", timeout=300)
  assert "running" not in proc.stdout and proc.stdout.count("already") == 3, proc.stdout
