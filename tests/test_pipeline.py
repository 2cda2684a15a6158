"""The pipeline end to end on a tiny configuration, its report, and resuming after a kill."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import helpers

DATA = ["--dataset=digits", "--image_size=8", "--max_train_examples=300", "--max_test_examples=32", "--seed=0"]
STAGE_FLAGS = {
    "teacher": DATA + ["--teacher_arch=small_cnn", "--teacher_width=0.25", "--adv_mode=pgd", "--eps=0.1",
                       "--step_size=0.05", "--attack_steps=2", "--val_attack_steps=2", "--val_examples=16",
                       "--test_attack_steps=2", "--epochs=1", "--steps_per_epoch=3", "--batch_size=16", "--verbose=2"],
    "search": DATA + ["--search_space=tiny", "--epochs=3", "--steps_per_epoch=4", "--batch_size=16",
                      "--tau_decay=auto", "--verbose=2"],
    "train": DATA + ["--objective=ce_kd", "--epochs=1", "--steps_per_epoch=3", "--batch_size=16", "--eps=0.1",
                     "--step_size=0.05", "--val_attack_steps=2", "--val_examples=16", "--test_attack_steps=2",
                     "--verbose=2"],
    "eval": DATA + ["--eps=0.1", "--step_size=0.05", "--attacks=fgsm,pgd3", "--eps_sweep=0,0.05,0.1",
                    "--blackbox_queries=30", "--batch_size=16"],
}


def _flagfiles(root):
  paths = {}
  for stage, lines in STAGE_FLAGS.items():
    path = root / f"{stage}.flags"
    path.write_text("\n".join(lines) + "\n")
    paths[stage] = str(path)
  return paths


def _args(run_dir, ff):
  return [f"--run_dir={run_dir}", f"--teacher_flagfile={ff['teacher']}", f"--search_flagfile={ff['search']}",
          f"--train_flagfile={ff['train']}", f"--eval_flagfile={ff['eval']}", "--model_name=tiny"]


@pytest.mark.slow
def test_pipeline_killed_in_search_resumes_to_the_report(tmp_path):
  # One tiny pipeline: killed during the search, rerun to the end (teacher not redone, the search
  # resumed from its checkpoint), then the report's content, then a rerun that skips every stage.
  ff = _flagfiles(tmp_path)
  run_dir = tmp_path / "run"
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  first_log = tmp_path / "first_run.txt"
  with open(first_log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "rnascl_tf.pipeline", *_args(run_dir, ff)], cwd=helpers.REPO,
                            env=env, stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
    search_state = run_dir / "search" / "run_state.json"
    try:
      deadline = time.time() + 400
      while time.time() < deadline and proc.poll() is None and not search_state.exists():
        time.sleep(0.1)
      assert search_state.exists(), "the pipeline never reached the search stage"
    finally:
      os.killpg(proc.pid, signal.SIGKILL)  # The pipeline and its stage subprocess.
      proc.wait(timeout=60)
  assert re.search(r"\[1/6\] teacher\s+running", first_log.read_text())
  assert not (run_dir / "search" / "genotype.json").exists()
  teacher_mtime = os.path.getmtime(run_dir / "teacher" / "teacher.keras")
  proc = helpers.run_cli("rnascl_tf.pipeline", *_args(run_dir, ff), timeout=900)
  assert re.search(r"\[1/6\] teacher\s+skipped", proc.stdout)
  for i, stage in enumerate(["search", "train", "export", "eval_teacher", "eval_student"]):
    assert re.search(rf"\[{i + 2}/6\] {stage}\s+running", proc.stdout), stage
  assert os.path.getmtime(run_dir / "teacher" / "teacher.keras") == teacher_mtime
  assert "Resuming the search" in (run_dir / "logs" / "search.log").read_text()
  assert "report:" in proc.stdout and "exported model:" in proc.stdout
  # It ends with the result, and the console holds only our lines (TensorFlow's go to the stage logs).
  assert re.search(r"params\s+MFLOPs\s+clean\s+PGD-3\s+worst case\n\s*teacher\s", proc.stdout), proc.stdout[-2000:]
  assert re.search(r"done in \d+ s; elapsed [\d.]+ min, remaining (~\d+ min|< 1 min)", proc.stdout)
  assert not [l for l in proc.stderr.splitlines() if "cuInit" in l or "oneDNN" in l], proc.stderr[-2000:]
  for path in ["teacher/teacher.keras", "search/genotype.json", "train/student.keras",
               "export/tiny/1/saved_model.pb", "eval_teacher/eval.json", "eval_student/eval.json"]:
    assert (run_dir / path).exists(), path
  student_eval = json.loads((run_dir / "eval_student" / "eval.json").read_text())
  assert student_eval["model"]["format"] != "keras" and student_eval["sanity"]["passed"]
  md = (run_dir / "report.md").read_text()
  for text in ["Headline", "Teacher vs student", "Searched architecture", "Tutors", "->", "Robustness against eps",
               "Sanity checks", "Reproduce", "python -m rnascl_tf.search", "curl", "cleverhans"]:
    assert text in md, text
  images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
  assert len(images) >= 5 and all((run_dir / p).exists() for p in images)
  html = (run_dir / "report.html").read_text()
  assert html.count("data:image/png;base64,") == len(images) and "src='report_files" not in html
  again = helpers.run_cli("rnascl_tf.pipeline", *_args(run_dir, ff), timeout=300)
  assert again.stdout.count("skipped") == 6


def test_pipeline_bad_flagfile_is_named(tmp_path):
  proc = helpers.run_cli("rnascl_tf.pipeline", f"--run_dir={tmp_path}", "--search_flagfile=flags/nope.flags",
                         check=False, timeout=120)
  assert proc.returncode == 2 and "--search_flagfile" in proc.stderr and "Traceback" not in proc.stderr


def _fingerprints(train_b_args):
  from rnascl_tf.pipeline import Stage, stage_fingerprints
  stages = [Stage("teacher", "m.teacher", ["--a=1"], []), Stage("search", "m.search", ["--b=1"], []),
            Stage("train_a", "m.train", ["--o=a"], [], after=["search"]),
            Stage("train_b", "m.train", train_b_args, [], after=["search"]),
            Stage("eval_a", "m.eval", ["--m=a"], [], after=["train_a"]),
            Stage("eval_b", "m.eval", ["--m=b"], [], after=["train_b"]),
            Stage("table", "m.table", [], [])]  # after=None: chained to the previous stage (eval_b).
  return stage_fingerprints(stages)


def test_stage_fingerprints_follow_declared_dependencies():
  base, changed = _fingerprints(["--o=b"]), _fingerprints(["--o=b", "--epochs=3"])
  assert {k for k in base if base[k] != changed[k]} == {"train_b", "eval_b", "table"}
  assert len(set(base.values())) == len(base)  # Same module, other args or upstream: other fingerprint.


def test_stage_fingerprints_reject_unknown_dependencies():
  from rnascl_tf.pipeline import Stage, stage_fingerprints
  with pytest.raises(ValueError, match="not earlier stages"):
    stage_fingerprints([Stage("a", "m", [], [], after=["b"]), Stage("b", "m", [], [])])


def test_fingerprint_ignores_flagfile_comments_but_not_flags(tmp_path):
  from rnascl_tf.pipeline import Stage
  path = tmp_path / "a.flags"

  def fp(text):
    path.write_text(text)
    return Stage("s", "m", [], [], flagfile=str(path)).fingerprint("")

  base = fp("# header\n--epochs=3\n")
  assert fp("# a new header line\n# more\n\n--epochs=3\n") == base
  assert fp("# header\n--epochs=4\n") != base


def _stage_fingerprints(run_dir, ff, spelled=None):
  """The fingerprints of the stages `build_stages` makes for `run_dir` (`spelled` None: the legacy ones)."""
  from absl import flags

  from rnascl_tf import pipeline
  fv = flags.FlagValues()
  pipeline.define_flags(fv)
  fv(["pipeline", *_args(run_dir, ff)])
  return pipeline.stage_fingerprints(pipeline.build_stages(run_dir, fv), spelled)


def test_fingerprints_do_not_depend_on_how_the_run_dir_is_spelled(tmp_path, monkeypatch):
  ff = _flagfiles(tmp_path)
  monkeypatch.chdir(tmp_path)
  base = _stage_fingerprints("run", ff, "run")
  for run_dir in ("run/", "./run", str(tmp_path / "run"), str(tmp_path / "moved" / "copy")):
    assert _stage_fingerprints(run_dir, ff, run_dir) == base, run_dir
  legacy = _stage_fingerprints("run", ff)
  assert all(legacy[name] != base[name] for name in base)  # Legacy ones hash the spelled paths.


def test_pipeline_state_of_earlier_versions_still_skips_and_then_may_move(tmp_path):
  from rnascl_tf import pipeline
  old, moved = tmp_path / "old", tmp_path / "moved"

  def stages(run_dir):
    return [pipeline.Stage("a", "m.a", [f"--model_dir={run_dir / 'a'}"], [str(run_dir / "a" / "done.txt")])]

  (old / "a").mkdir(parents=True)
  (old / "a" / "done.txt").write_text("x")
  legacy = pipeline.stage_fingerprints(stages(old))["a"]  # As earlier versions recorded it.
  (old / "pipeline_state.json").write_text(json.dumps({"schema": pipeline.STATE_SCHEMA,
                                                       "stages": {"a": {"fingerprint": legacy}}}))
  state, status = pipeline.run_stages(str(old), stages(old))  # A stage that ran would fail: module m.a.
  assert status == 0 and state["stages"]["a"]["fingerprint"] == pipeline.stage_fingerprints(stages(old), str(old))["a"]
  os.rename(old, moved)
  state, status = pipeline.run_stages(str(moved), stages(moved))
  assert status == 0 and json.loads((moved / "pipeline_state.json").read_text()) == state
