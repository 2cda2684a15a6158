r"""One command from teacher to served model: `python -m rnascl_tf.pipeline --flagfile=flags/digits_pipeline.flags`.

Runs teacher -> search -> retrain -> export -> evaluate (teacher and exported student) into one
--run_dir, each stage as its own entry point (`python -m rnascl_tf.<stage>` with its flagfile), then
writes report.md and report.html. A stage whose artefact exists and was made with the same flags is
skipped, so a killed pipeline resumes in the stage it was in (that stage resumes from its own last
epoch checkpoint).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

from absl import flags

from rnascl_tf import cli
from rnascl_tf.configs import DEFAULT_ATTACKS
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.runtime import stage_costs, tf_console
from rnascl_tf.errors import UserInputError

STATE_SCHEMA = "rnascl_tf/pipeline_state"


class Stage:
  """One pipeline stage: its entry point, arguments, artefact check and upstream dependencies.

  Args:
    name: unique stage name (log file, state key).
    module: entry point run as `python -m <module> <args>`.
    args: its command-line arguments.
    artefacts: files whose presence means the stage finished.
    epochs: training epochs (0 for non-training stages), for the time estimate.
    flagfile: the stage's flagfile; its content is part of the fingerprint.
    model_dir: the stage's run folder (its run_state.json gives seconds per epoch).
    after: names of the stages this one consumes; their fingerprints enter this one's, so redoing
      one redoes its consumers. None: the previous stage in the list (a linear chain).
  """

  def __init__(self, name: str, module: str, args: List[str], artefacts: List[str], epochs: int = 0,
               flagfile: Optional[str] = None, model_dir: Optional[str] = None,
               after: Optional[List[str]] = None):
    self.name, self.module, self.args, self.artefacts = name, module, args, artefacts
    self.epochs, self.flagfile, self.model_dir, self.after = epochs, flagfile, model_dir, after

  def fingerprint(self, upstream: str, run_dir: Optional[str] = None) -> str:
    """The hash of the module, the args, the flagfile's flag lines and the `upstream` fingerprints.

    Only the flag lines count: editing a flagfile's header comment does not redo a finished stage.
    With `run_dir`, a path under it counts as `<run_dir>/...`, so the same folder spelled relatively
    or absolutely, moved or copied, has the same fingerprints (None: the raw args, as pipeline
    states of earlier versions recorded them).
    """
    lines = open(self.flagfile).read().splitlines() if self.flagfile else []
    text = "\n".join(l.strip() for l in lines if l.strip() and not l.strip().startswith("#"))
    args = self.args if run_dir is None else [_run_dir_placeholder(a, run_dir) for a in self.args]
    blob = json.dumps({"module": self.module, "args": args, "flagfile": text, "upstream": upstream})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

  def artefacts_present(self) -> bool:
    return all(os.path.exists(p) for p in self.artefacts)


def _run_dir_placeholder(arg: str, run_dir: str) -> str:
  """`--x=<run_dir>/teacher` for `--x=` + a path under `run_dir` as the stages spell it."""
  name, sep, value = arg.partition("=")
  prefix = os.path.join(run_dir, "")
  if sep and value.startswith(prefix):
    return f"{name}=<run_dir>/{value[len(prefix):]}"
  return arg


def flagfile_value(path: str, name: str) -> Optional[str]:
  """The last --name=value of a flagfile (flagfiles are one flag per line)."""
  value = None
  for line in open(path):
    line = line.strip()
    if line.startswith(f"--{name}="):
      value = line.split("=", 1)[1]
  return value


def _flagfile_epochs(path: str, flag: str, default: int) -> int:
  """The stage's --epochs (for the time estimate), refused now if the stage would refuse it later."""
  value = flagfile_value(path, "epochs")
  try:
    return default if value is None else int(value)
  except ValueError:
    raise UserInputError(f"--{flag} {path!r}: --epochs must be an integer, got {value!r}") from None


def _check_flagfile(path: str, flag: str) -> str:
  """The flagfile of --`flag`, checked now: a stage would only fail on it after the stages before it ran."""
  if not os.path.isfile(path):
    raise UserInputError(f"--{flag}: no such flagfile {path!r} (paths are relative to the repository root)")
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      cli.check_no_trailing_comment(line.strip(), where=f"--{flag} {path!r} line {number}: ")
  return path


def build_stages(run_dir: str, f) -> List[Stage]:
  """The pipeline's stages for the parsed flags (pure: no side effects)."""
  d = lambda *p: os.path.join(run_dir, *p)  # noqa: E731
  stages = []
  teacher_path = f.teacher_path
  if not teacher_path:
    ff = _check_flagfile(f.teacher_flagfile, "teacher_flagfile")
    stages.append(Stage("teacher", "rnascl_tf.train_teacher", [f"--flagfile={ff}", f"--model_dir={d('teacher')}"],
                        [d("teacher", "teacher.keras"), d("teacher", "teacher_manifest.json")],
                        _flagfile_epochs(ff, "teacher_flagfile", 30), ff, d("teacher")))
    teacher_path = d("teacher", "teacher.keras")
  elif not os.path.isfile(teacher_path):
    raise UserInputError(f"--teacher_path: no such file {teacher_path!r}")
  ff = _check_flagfile(f.search_flagfile, "search_flagfile")
  stages.append(Stage("search", "rnascl_tf.search", [f"--flagfile={ff}", f"--model_dir={d('search')}",
                                                      f"--teacher_path={teacher_path}"],
                      [d("search", "genotype.json")], _flagfile_epochs(ff, "search_flagfile", 10), ff, d("search")))
  ff = _check_flagfile(f.train_flagfile, "train_flagfile")
  stages.append(Stage("train", "rnascl_tf.train", [f"--flagfile={ff}", f"--model_dir={d('train')}",
                                                   f"--genotype={d('search', 'genotype.json')}",
                                                   f"--teacher_path={teacher_path}"],
                      [d("train", "student.keras"), d("train", "train_summary.json")],
                      _flagfile_epochs(ff, "train_flagfile", 30), ff, d("train")))
  export_dir = d("export", f.model_name, str(f.version))
  stages.append(Stage("export", "rnascl_tf.export", [f"--model={d('train', 'student.keras')}",
                                                     f"--export_base={d('export')}", f"--model_name={f.model_name}",
                                                     f"--version={f.version}", "--overwrite"],
                      [os.path.join(export_dir, "saved_model.pb")]))
  ff = _check_flagfile(f.eval_flagfile, "eval_flagfile")
  stages.append(Stage("eval_teacher", "rnascl_tf.evaluate", [f"--flagfile={ff}", f"--model={teacher_path}",
                                                             f"--output_dir={d('eval_teacher')}"],
                      [d("eval_teacher", "eval.json")], flagfile=ff))
  stages.append(Stage("eval_student", "rnascl_tf.evaluate", [f"--flagfile={ff}", f"--model={export_dir}",
                                                             f"--output_dir={d('eval_student')}"],
                      [d("eval_student", "eval.json")], flagfile=ff))
  return stages


def _attack_count(flagfile: str) -> int:
  """How many attacks an evaluation with this flagfile runs (main, sweep and ART ones), for the estimate."""
  from rnascl_tf import evaluate
  from rnascl_tf.evaluation import plan

  fv = flags.FlagValues()
  evaluate.define_flags(fv)
  try:
    fv(["pipeline", f"--flagfile={flagfile}"])
    cfg = cli.eval_config(fv)
  except (flags.Error, UserInputError):  # The stage itself will say what is wrong.
    return len(DEFAULT_ATTACKS)
  art = plan.art_plan(cfg, num_classes=10)  # The number of ART attacks does not depend on the classes.
  return len({c.label() for c in cfg.attack_configs() + cfg.sweep_configs()}) + (len(art.attacks) if art else 0)


def stage_named(stages: List[Stage], name: str) -> Stage:
  """The stage called `name` (stages are looked up by name, never by position)."""
  for stage in stages:
    if stage.name == name:
      return stage
  raise KeyError(f"no pipeline stage named {name!r}; stages: {[s.name for s in stages]}")


def stage_fingerprints(stages: List[Stage], run_dir: Optional[str] = None) -> dict:
  """{stage name: fingerprint}: its module, args and flagfile, chained with those of its `after` stages.

  `run_dir` makes them independent of how the run folder is spelled (`Stage.fingerprint`).
  """
  fingerprints = {}
  for i, stage in enumerate(stages):
    deps = stage.after if stage.after is not None else [s.name for s in stages[i - 1:i]]
    unknown = [d for d in deps if d not in fingerprints]
    if unknown:
      raise ValueError(f"stage {stage.name}: `after` names {unknown}, which are not earlier stages")
    fingerprints[stage.name] = stage.fingerprint("+".join(fingerprints[d] for d in deps), run_dir)
  return fingerprints


def run_stages(run_dir: str, stages: List[Stage]) -> tuple:
  """Runs or skips every stage in order (logs in <run_dir>/logs, state in pipeline_state.json).

  Returns:
    (state, status): the pipeline state ({"stages": {name: {fingerprint, seconds, command}}}) and the
    exit status (0, or 4 when an evaluation's sanity check failed).

  Raises:
    UserInputError: a stage failed, or its artefacts were made with other flags.
  """
  os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
  state_path = os.path.join(run_dir, "pipeline_state.json")
  state = io_utils.read_json(state_path, "pipeline state") if os.path.exists(state_path) else {
      "schema": STATE_SCHEMA, "stages": {}}
  if state.get("schema") != STATE_SCHEMA:
    raise UserInputError(f"--run_dir {run_dir!r} holds a foreign pipeline_state.json; use a new --run_dir")
  t0, fingerprints, status = time.time(), stage_fingerprints(stages, run_dir), 0
  attacks = {s.name: _attack_count(s.flagfile) for s in stages if s.module == "rnascl_tf.evaluate" and s.flagfile}
  legacy = stage_fingerprints(stages)  # What pipeline states of earlier versions recorded.
  for i, stage in enumerate(stages):
    fp = fingerprints[stage.name]
    prev = state["stages"].get(stage.name)
    label = f"[{i + 1}/{len(stages)}] {stage.name:<12}"
    same = bool(prev) and prev.get("fingerprint") in (fp, legacy[stage.name])
    if same and stage.artefacts_present():
      if prev["fingerprint"] != fp:  # Recorded the new way, so the folder may now be moved.
        state["stages"][stage.name] = {**prev, "fingerprint": fp}
        io_utils.atomic_write_json(state_path, state)
      print(f"{label} skipped: its artefacts are valid for the same flags ({stage.artefacts[0]})", flush=True)
      continue
    if prev and not same and stage.artefacts_present():
      raise UserInputError(f"stage {stage.name}: {stage.artefacts[0]} was made with other flags; use a new "
                           f"--run_dir (or delete {os.path.dirname(stage.artefacts[0])!r} to redo it)")
    log = os.path.join(run_dir, "logs", f"{stage.name}.log")
    print(f"{label} running: python -m {stage.module} {' '.join(stage.args)}  (log: {log})", flush=True)
    t_stage = time.time()
    with open(log, "a") as out:
      rc = subprocess.call([sys.executable, "-m", stage.module, *stage.args], stdout=out,
                           stderr=subprocess.STDOUT,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", tf_console.KEEP_ENV: "all"})
    if rc == 4 and stage.module == "rnascl_tf.evaluate":
      print(f"{label} SANITY CHECK FAILED (see {log}); continuing", flush=True)
      status = 4
    elif rc != 0 or not stage.artefacts_present():
      tail = [l for l in open(log).read().splitlines() if not tf_console.is_startup_noise(l)][-15:]
      print("\n".join(tail), file=sys.stderr)
      raise UserInputError(f"stage {stage.name} failed (exit {rc}); full log: {log}. Fix the cause and rerun the "
                           "same command: finished stages are skipped")
    state["stages"][stage.name] = {"fingerprint": fp, "seconds": round(time.time() - t_stage, 1),
                                   "command": f"python -m {stage.module} {' '.join(stage.args)}"}
    io_utils.atomic_write_json(state_path, state)
    walls = {name: entry["seconds"] for name, entry in state["stages"].items() if "seconds" in entry}
    remaining = stage_costs.remaining_seconds(stages, i + 1, walls, attacks)
    print(f"{label} done in {time.time() - t_stage:.0f} s; elapsed {(time.time() - t0) / 60:.1f} min, "
          f"remaining {stage_costs.describe(remaining)}", flush=True)
  return state, status


def run_pipeline(run_dir: str, stages: List[Stage]) -> int:
  """Runs or skips every stage, then writes the report. Returns the exit status."""
  t0 = time.time()
  state, status = run_stages(run_dir, stages)
  from rnascl_tf.evaluation import report  # Imports TF/matplotlib: only once the stages are done.
  paths = report.write_report(run_dir, {s.name: state["stages"].get(s.name, {}).get("command") for s in stages})
  export = stage_named(stages, "export")
  print(f"\nteacher vs student (test split; worst case: correct under every attack):\n{paths['headline']}\n")
  print(f"report: {paths['markdown']}\n        {paths['html']}\nexported model: "
        f"{os.path.dirname(export.artefacts[0])}\ntotal time: {(time.time() - t0) / 60:.1f} min")
  return status


def define_flags(fv: flags.FlagValues) -> None:
  """Defines exactly this entry point's flags on `fv`."""
  flags.DEFINE_string("run_dir", None, "Run folder: one subfolder per stage, logs/, report.md, report.html.",
                      flag_values=fv)
  flags.DEFINE_string("teacher_flagfile", "flags/digits_teacher.flags", "Flagfile of the teacher stage.",
                      flag_values=fv)
  flags.DEFINE_string("teacher_path", None, "Use this .keras teacher instead of training one.", flag_values=fv)
  flags.DEFINE_string("search_flagfile", "flags/digits_search.flags", "Flagfile of the search stage.",
                      flag_values=fv)
  flags.DEFINE_string("train_flagfile", "flags/digits_train.flags", "Flagfile of the retraining stage.",
                      flag_values=fv)
  flags.DEFINE_string("eval_flagfile", "flags/digits_eval.flags", "Flagfile of the evaluation stage (data and "
                      "attack flags; used for the teacher and for the exported student).", flag_values=fv)
  flags.DEFINE_string("model_name", "rnascl", "Exported model name (<run_dir>/export/<model_name>/<version>).",
                      flag_values=fv)
  flags.DEFINE_integer("version", 1, "Exported model version.", flag_values=fv)


def main(argv, fv: flags.FlagValues = flags.FLAGS) -> int:
  if not fv.run_dir:
    raise UserInputError("--run_dir is required (the pipeline's run folder; rerun with it to resume)")
  io_utils.check_writable_dir(fv.run_dir, "--run_dir")
  return run_pipeline(fv.run_dir, build_stages(fv.run_dir, fv))


def run() -> None:
  """The `rnascl-pipeline` command."""
  cli.run_entry_point(define_flags, main)


if __name__ == "__main__":
  run()
