"""Bad input to any entry point: exit status 2, one line naming the flag or file, and no file changed.

Every case runs an entry point in a folder that holds finished teacher, search and retraining runs
(fake files: each case is refused before anything reads them) and checks that no file was changed
(hash, mtime, mode) and none was added. All but one are refused before TensorFlow is imported (~1 s);
the finished teacher is refused by its stage, after the import (~6 s on an idle machine).
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from absl import flags

import helpers
from rnascl_tf import cli, retrain, search, train_teacher

# The settings the finished runs were made with (the flags each entry point records in its provenance).
FINISHED = {
    "teacher": (train_teacher, "train_teacher", "teacher_manifest.json", ["--learning_rate=0.05"]),
    "search": (search, "search", "genotype.json", ["--teacher_path=teacher/teacher.keras"]),
    "train": (retrain, "train", "train_summary.json", ["--genotype=search/genotype.json"]),
}


def _record(module, args):
  fv = flags.FlagValues()
  module.define_flags(fv)
  fv(["prog", *args])
  return cli.own_flag_values(fv, module.define_flags)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """The folder every case runs in: finished runs, a file in the way, a bad space, commented flagfiles."""
  root = tmp_path_factory.mktemp("bad_inputs")
  for name, (module, stage, provenance, args) in FINISHED.items():
    run = root / name
    (run / "ckpt").mkdir(parents=True)
    (run / "run_state.json").write_text(json.dumps({"schema": "rnascl_tf/run_state", "version": 1, "stage": stage,
                                                    "epochs_completed": 4}))
    (run / provenance).write_text(json.dumps({"flags": _record(module, [f"--model_dir={name}", "--epochs=4",
                                                                        *args])}))
    (run / "ckpt" / "ckpt-4.index").write_bytes(b"checkpoint")
  (root / "teacher" / "teacher.keras").write_bytes(b"teacher")
  (root / "train" / "student.keras").write_bytes(b"student")
  (root / "afile.txt").write_text("a file where a folder should be")
  (root / "bad_space.json").write_bytes(b'\xff\xfe{"name": "x"}')
  (root / "comment_model_dir.flags").write_text("# header comments are fine\n--model_dir=new   # my teacher\n")
  (root / "comment_epochs.flags").write_text("--teacher_path=teacher/teacher.keras\n--epochs=2  # two\n")
  (root / "comment_search.flags").write_text("--dataset=digits\n--epochs=3\t# short\n")
  return root


def _snapshot(root):
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames:
      out[os.path.relpath(os.path.join(dirpath, name), root)] = "folder"
    for name in filenames:
      path = os.path.join(dirpath, name)
      st = os.stat(path)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = (hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns, st.st_mode)
  return out


SYSFS = pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
TEACHER = "--teacher_path=teacher/teacher.keras"


@pytest.mark.parametrize("module, args, message", [
    # 1: output locations are checked before any work.
    ("evaluate", ["--model=teacher/teacher.keras", "--output_dir=afile.txt/eval"],
     "--output_dir: cannot create 'afile.txt/eval': 'afile.txt' is a file, not a folder"),
    ("evaluate", ["--model=afile.txt/model.keras"], "--output_dir: cannot create 'afile.txt/model_eval'"),
    ("train_teacher", ["--model_dir=afile.txt/teacher"], "--model_dir: cannot create 'afile.txt/teacher'"),
    ("retrain", ["--model_dir=afile.txt", "--genotype=search/genotype.json"], "--model_dir: 'afile.txt' is a file"),
    ("export", ["--model=train/student.keras", "--export_base=afile.txt/serving", "--model_name=a", "--version=1"],
     "--export_base: cannot create 'afile.txt/serving'"),
    ("pipeline", ["--run_dir=afile.txt/run"], "--run_dir: cannot create 'afile.txt/run'"),
    pytest.param("search", ["--model_dir=/sys/rnascl/search", TEACHER], "--model_dir: cannot write into '/sys'",
                 marks=SYSFS),
    pytest.param("export", ["--model=train/student.keras", "--export_base=/sys/serving", "--model_name=a",
                            "--version=1"], "--export_base: cannot write into '/sys'", marks=SYSFS),
    ("train_teacher", ["--model_dir=" + "x" * 300], "--model_dir: the folder name 'xxx"),
    # 2: a finished stage is not redone with other settings (the flags in its provenance); the search and
    # the retraining are tested in-process in tests/stages/test_driver.py.
    ("train_teacher", ["--model_dir=teacher", "--epochs=2", "--learning_rate=0.7"],
     "the teacher training is already done with other settings: --epochs: 4 done, now 2; --learning_rate: "
     "recorded 0.05, now 0.7"),
    # 5: one-line errors instead of tracebacks.
    ("search", ["--model_dir=new", TEACHER, "--search_space=bad_space.json"],
     "--search_space (bad_space.json): not UTF-8 text (byte 0: b'\\xff'); expected a JSON search-space file"),
    ("search", ["--model_dir=new", TEACHER, "--tau_min=0"], "--tau_min must be > 0"),
    ("search", ["--model_dir=new", TEACHER, "--tau0=-1"], "--tau0 must be >= --tau_min"),
    ("search", ["--model_dir=new", TEACHER, "--tau0=0", "--tau_min=0"], "--tau_min must be > 0"),
    ("search", ["--model_dir=new", TEACHER, "--cl_grid=0"], "--cl_grid must be >= 1"),
    ("pipeline", ["--run_dir=new", TEACHER, "--search_flagfile=comment_search.flags"],
     "--search_flagfile 'comment_search.flags' line 2: --epochs: '--epochs=3\\t# short' has a comment after the "
     "value"),
    # 6: comments after a flag value (string and numeric flags).
    ("train_teacher", ["--flagfile=comment_model_dir.flags"],
     "--model_dir: '--model_dir=new   # my teacher' has a comment after the value; absl does not support that"),
    ("search", ["--model_dir=new", "--flagfile=comment_epochs.flags"], "--epochs: '--epochs=2  # two' has a comment"),
    ("export", ["--model_name=a  # served name"], "--model_name: '--model_name=a  # served name' has a comment"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(root, module, args, message):
  before = _snapshot(root)
  proc = subprocess.run([sys.executable, "-m", f"rnascl_tf.{module}", *args], cwd=root, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "PYTHONPATH": helpers.REPO,
                                                     "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert _snapshot(root) == before, "a bad input changed or added files"
