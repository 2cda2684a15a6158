r"""The CIFAR-10 study: does the teacher, the cross-layer term, the tutor map, the search help? (EXPERIMENTS.md)

    python scripts/study_cifar10.py [--data=../shared/data/cifar10-jpeg.tar.gz] [--run_dir=runs/study_cifar10]
        [--seeds=0,1,2] [--conditions=trades,ard,...] [--teacher=teacher.keras]
        [--best_objective=ard --best_with_cl=true] [--report_only]

One robust teacher (--teacher, else the copy committed under <results_dir>/teacher/, else trained
once from <flagfiles>_teacher.flags) serves every run. Per seed k: one search (seed k's genotype is
used by all of seed k's runs), then per condition of CONDITIONS a retraining (`python -m
rnascl_tf.train`, --seed=k) and an evaluation (`python -m rnascl_tf.evaluate --per_example`) with
a fixed --seed=--eval_seed, so every model is attacked on the same test images in the same order.
Each stage is skipped when done with the same flags (resumable, `rnascl_tf.pipeline.run_stages`).
After each finished train + evaluation pair, the run's small JSON files are copied atomically to
<results_dir>/seed<k>/<condition>/ (train_summary.json, eval.json, per_example.json, run.json; the
.keras student stays in the run folder); a run whose folder is there is never redone, so a fresh
checkout of the committed results continues where the study stopped. Ends with
scripts/study_report.py's results.md, results.json and figures in <results_dir>.

The conditions of Q2-Q4 use the best objective, known only after Q1 (and Q2) ran: they run when
--best_objective (and, for Q4 and the Square check, --best_with_cl) are given; the report suggests
both. Run from the repository root (the flagfile paths are relative to it).
"""

import argparse
import hashlib
import os
import shutil
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
for path in (REPO, os.path.dirname(os.path.abspath(__file__))):
  if path not in sys.path:
    sys.path.insert(0, path)

import study_report  # noqa: E402
from reproduce_cifar10 import DEFAULT_DATA, prepare_data  # noqa: E402
from rnascl_tf.errors import UserInputError, exit_with_status  # noqa: E402
from rnascl_tf.pipeline import Stage, flagfile_value, run_stages  # noqa: E402
from rnascl_tf.runtime import artefacts as io_utils  # noqa: E402

Q1_OBJECTIVES = ("trades", "ard", "rslad", "adaad")
# name -> (question, objective, extra train flags). "{best}" = --best_objective; "{cl}" = the
# cross-layer weight of the final choice (--gamma_cl=1 with --best_with_cl=true, else 0); "{seed}" =
# the seed. Every condition states --gamma_cl, so the objectives' presets never decide it silently.
CONDITIONS = {
    "trades": ("Q1", "trades", ["--gamma_cl=0"]),
    "ard": ("Q1", "ard", ["--gamma_cl=0"]),
    "rslad": ("Q1", "rslad", ["--gamma_cl=0"]),
    "adaad": ("Q1", "adaad", ["--gamma_cl=0"]),
    "best_cl": ("Q2", "{best}", ["--gamma_cl=1"]),
    "best_cl_same_depth": ("Q3", "{best}", ["--gamma_cl=1", "--tutor_map=same_depth"]),
    "best_cl_random": ("Q3", "{best}", ["--gamma_cl=1", "--tutor_map=random"]),
    "uniform": ("Q4", "{best}", ["{cl}", "--architecture=uniform"]),
    "random_arch": ("Q4", "{best}", ["{cl}", "--architecture=random", "--arch_seed={seed}"]),
    "resnet20": ("Q4", "{best}", ["{cl}", "--architecture=resnet20"]),
}
# Not a training run: the final best model of each seed evaluated with <flagfiles>_square.flags.
SQUARE = "square"
RUN_FILES = ("train_summary.json", "eval.json", "per_example.json", "run.json")
SQUARE_FILES = ("eval.json", "per_example.json", "run.json")


def _bool(text: str) -> bool:
  if text.strip().lower() in ("true", "1", "yes"):
    return True
  if text.strip().lower() in ("false", "0", "no"):
    return False
  raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=DEFAULT_DATA, help="cifar10-jpeg.tar.gz, or a folder with train/ and test/")
  p.add_argument("--dataset", default=None, help="a built-in dataset instead of --data (tests: digits)")
  p.add_argument("--run_dir", default=os.path.join("runs", "study_cifar10"), help="stage folders, logs, students")
  p.add_argument("--results_dir", default=study_report.DEFAULT_RESULTS, help="the committed per-run JSON files")
  p.add_argument("--seeds", type=study_report.seed_list, default="0,1,2",
                 help="comma-separated seeds (one search each)")
  p.add_argument("--conditions", default=",".join([*CONDITIONS, SQUARE]),
                 help=f"comma-separated subset of {', '.join([*CONDITIONS, SQUARE])}")
  p.add_argument("--teacher", default=None, help="teacher.keras shared by every run (default: the committed copy "
                 "<results_dir>/teacher/teacher.keras, else trained once from <flagfiles>_teacher.flags)")
  p.add_argument("--best_objective", default=None, choices=Q1_OBJECTIVES, help="the Q1 winner; default unset: "
                 "the Q2/Q3 conditions (best_cl*) are not run")
  p.add_argument("--best_with_cl", default=None, type=_bool, help="true|false: whether Q4's children and the "
                 "Square check use the cross-layer term (Q2's answer); default unset: they are not run")
  p.add_argument("--eval_seed", type=int, default=0, help="--seed of every evaluation: the same test images")
  p.add_argument("--flagfiles", default=os.path.join("flags", "cifar10_study"),
                 help="prefix of <prefix>_{teacher,search,train,eval,square}.flags (the budget)")
  p.add_argument("--report_only", action="store_true", help="only rebuild results.md / results.json / figures")
  args = p.parse_args(argv)
  args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
  unknown = [c for c in args.conditions if c not in CONDITIONS and c != SQUARE]
  if unknown or not args.conditions:
    raise UserInputError(f"--conditions: unknown {unknown}; expected a subset of {', '.join([*CONDITIONS, SQUARE])}")
  if not args.seeds:
    raise UserInputError("--seeds: give at least one seed")
  if args.report_only:
    study_report.check_results_dir(args.results_dir)
  if args.best_objective == "trades" and args.best_with_cl:
    raise UserInputError("--best_with_cl=true: trades has no teacher, so no cross-layer term")
  if args.dataset == "digits" and set(args.seeds) != {args.eval_seed}:
    raise UserInputError(f"--seeds: digits has no separate test split; its test images of --eval_seed="
                         f"{args.eval_seed} would be training images of the other seeds")
  return args


def condition_flags(args, name: str, seed: int):
  """(objective, extra train flags) of a condition, or (None, reason) when --best_* does not allow it yet."""
  _, objective, extra = CONDITIONS[name]
  needs_best = "{best}" in objective
  needs_cl = any("{cl}" in f for f in extra)
  if needs_best and args.best_objective is None:
    return None, "needs --best_objective"
  if needs_best and args.best_objective == "trades" and any(f == "--gamma_cl=1" for f in extra):
    return None, "trades has no teacher, so no cross-layer term"
  if needs_cl and args.best_with_cl is None:
    return None, "needs --best_with_cl"
  cl = "--gamma_cl=1" if args.best_with_cl else "--gamma_cl=0"
  values = {"{best}": args.best_objective or "", "{cl}": cl, "{seed}": str(seed)}

  def fill(text):
    for key, value in values.items():
      text = text.replace(key, value)
    return text

  return fill(objective), [fill(f) for f in extra]


def final_condition(args):
  """The condition of the final best model (the Q4 reference and the Square check's model)."""
  if args.best_objective is None or args.best_with_cl is None:
    return None
  return "best_cl" if args.best_with_cl else args.best_objective


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def flag_digest(path: str) -> str:
  """Hash of a flagfile's flag lines (comments and blank lines do not count), recorded with each run."""
  lines = [l.strip() for l in open(path, encoding="utf-8")]
  return hashlib.sha256("\n".join(l for l in lines if l and not l.startswith("#")).encode()).hexdigest()[:16]


def copy_run(files: dict, dest: str, record: dict) -> None:
  """Copies {name: source path} and run.json into `dest` as one atomic folder rename."""
  tmp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.partial")
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  for name, src in files.items():
    shutil.copyfile(src, os.path.join(tmp, name))
  io_utils.atomic_write_json(os.path.join(tmp, "run.json"), record)
  shutil.rmtree(dest, ignore_errors=True)  # An incomplete folder from an older version of the script.
  os.replace(tmp, dest)


def copy_file(src: str, dest: str) -> None:
  tmp = dest + ".partial"
  os.makedirs(os.path.dirname(dest), exist_ok=True)
  shutil.copyfile(src, tmp)
  os.replace(tmp, dest)


def complete(folder: str, files=RUN_FILES) -> bool:
  return all(os.path.isfile(os.path.join(folder, f)) for f in files)


class Study:
  """The stages of the study, run one unit (teacher, a seed's search, a condition's pair) at a time."""

  def __init__(self, args, data_args: list):
    self.args, self.data_args = args, data_args
    self.ff = {k: f"{args.flagfiles}_{k}.flags" for k in ("teacher", "search", "train", "eval", SQUARE)}
    self.teacher_path = None
    self.search_failed = {}  # seed -> why: a failed search fails that seed's runs without rerunning it.

  def flagfile(self, key: str) -> str:
    path = self.ff[key]
    if not os.path.isfile(path):
      raise UserInputError(f"--flagfiles: no {key} flagfile {path!r}")
    return path

  def epochs(self, key: str) -> int:
    return int(flagfile_value(self.flagfile(key), "epochs") or 0)

  def res(self, *parts) -> str:
    return os.path.join(self.args.results_dir, *parts)

  def eval_stage(self, name: str, model: str, out: str, key: str = "eval") -> Stage:
    return Stage(name, "rnascl_tf.evaluate", [f"--flagfile={self.flagfile(key)}", *self.data_args,
                                              f"--seed={self.args.eval_seed}", f"--model={model}",
                                              f"--output_dir={out}", "--per_example=true"],
                 [os.path.join(out, "eval.json"), os.path.join(out, "per_example.json")], flagfile=self.ff[key],
                 after=[])

  def teacher(self) -> str:
    """The shared teacher's path, trained, copied and evaluated once; its identity is checked on every run."""
    a, d = self.args, lambda *p: os.path.join(self.args.run_dir, *p)  # noqa: E731
    committed = self.res("teacher", "teacher.keras")
    path = a.teacher or committed
    if a.teacher and not os.path.isfile(a.teacher):
      raise UserInputError(f"--teacher: no such file {a.teacher!r}")
    if not os.path.isfile(path):
      ff = self.flagfile("teacher")
      run_stages(a.run_dir, [Stage("teacher", "rnascl_tf.train_teacher",
                                   [f"--flagfile={ff}", *self.data_args, f"--seed={a.eval_seed}",
                                    f"--model_dir={d('teacher')}"],
                                   [d("teacher", "teacher.keras"), d("teacher", "teacher_manifest.json")],
                                   self.epochs("teacher"), ff, d("teacher"))])
      copy_file(d("teacher", "teacher_manifest.json"), self.res("teacher", "teacher_manifest.json"))
      copy_file(d("teacher", "teacher.keras"), committed)
      print(f"teacher: copied to {committed} ({os.path.getsize(committed) / 1e6:.1f} MB; commit it)", flush=True)
    manifest = os.path.join(os.path.dirname(path), "teacher_manifest.json")
    if a.teacher and os.path.isfile(manifest) and not os.path.isfile(self.res("teacher", "teacher_manifest.json")):
      copy_file(manifest, self.res("teacher", "teacher_manifest.json"))
    info_path, digest = self.res("teacher", "teacher.json"), sha256(path)
    if os.path.isfile(info_path):
      known = io_utils.read_json(info_path, "teacher.json")["sha256"]
      if known != digest:
        raise UserInputError(f"--teacher: {path!r} is not the teacher of the results in {a.results_dir!r} "
                             f"(sha256 {digest[:12]} != {known[:12]}); use another --results_dir")
    else:
      io_utils.atomic_write_json(info_path, {"path": path, "sha256": digest, "bytes": os.path.getsize(path),
                                             "given": bool(a.teacher)})
    if not complete(self.res("teacher"), ("eval.json", "per_example.json")):
      run_stages(a.run_dir, [self.eval_stage("eval_teacher", path, d("eval_teacher"))])
      for name in ("eval.json", "per_example.json"):
        copy_file(d("eval_teacher", name), self.res("teacher", name))
      ev = io_utils.read_json(self.res("teacher", "eval.json"), "eval.json")
      print(f"teacher: clean {ev['clean_accuracy']:.1%}, white-box worst case "
            f"{ev['worst_case_white_box']['accuracy']:.1%}", flush=True)
    self.teacher_path = path
    return path

  def genotype(self, seed: int) -> str:
    """Seed `seed`'s searched genotype: the committed copy, else searched now and copied."""
    committed = self.res(f"seed{seed}", "search", "genotype.json")
    if seed in self.search_failed:
      raise UserInputError(self.search_failed[seed])
    if not os.path.isfile(committed):
      d = lambda *p: os.path.join(self.args.run_dir, f"seed{seed}", *p)  # noqa: E731
      ff = self.flagfile("search")
      try:
        state, _ = run_stages(d(), [Stage("search", "rnascl_tf.search", [
            f"--flagfile={ff}", *self.data_args, f"--seed={seed}", f"--model_dir={d('search')}",
            f"--teacher_path={self.teacher_path}"], [d("search", "genotype.json")], self.epochs("search"), ff,
            d("search"))])
      except UserInputError as e:
        self.search_failed[seed] = str(e)
        raise
      io_utils.atomic_write_json(self.res(f"seed{seed}", "search", "search.json"),
                                 {"budget": {"search": flag_digest(ff)},
                                  "seconds": state["stages"]["search"].get("seconds"),
                                  "command": state["stages"]["search"].get("command")})
      copy_file(d("search", "genotype.json"), committed)
    return committed

  def run_condition(self, name: str, seed: int) -> None:
    a = self.args
    dest = self.res(f"seed{seed}", name)
    if complete(dest):
      print(f"seed {seed} {name}: in {dest} already", flush=True)
      return
    objective, extra = condition_flags(a, name, seed)
    if objective is None:
      print(f"seed {seed} {name}: not run ({extra})", flush=True)
      return
    d = lambda *p: os.path.join(a.run_dir, f"seed{seed}", *p)  # noqa: E731
    ff = self.flagfile("train")
    train = Stage(f"train_{name}", "rnascl_tf.train", [
        f"--flagfile={ff}", *self.data_args, f"--seed={seed}", f"--model_dir={d('train', name)}",
        f"--genotype={self.genotype(seed)}", f"--teacher_path={self.teacher_path}", f"--objective={objective}",
        *extra], [d("train", name, "student.keras"), d("train", name, "train_summary.json")], self.epochs("train"),
        ff, d("train", name), after=[])
    ev = self.eval_stage(f"eval_{name}", d("train", name, "student.keras"), d("eval", name))
    ev.after = [train.name]
    t0 = time.time()
    state, _ = run_stages(d(), [train, ev])
    secs = {k: state["stages"][s.name].get("seconds") for k, s in (("train", train), ("eval", ev))}
    record = {"condition": name, "question": CONDITIONS[name][0], "seed": seed, "objective": objective,
              "flags": extra, "eval_seed": a.eval_seed, "seconds": secs, "teacher_sha256": sha256(self.teacher_path),
              "budget": {k: flag_digest(self.ff[k]) for k in ("train", "eval")},
              "commands": {s.name: state["stages"][s.name].get("command") for s in (train, ev)}}
    if "{best}" in CONDITIONS[name][1]:
      record["best_objective"] = a.best_objective
    if any("{cl}" in f for f in CONDITIONS[name][2]):
      record["best_with_cl"] = a.best_with_cl
    copy_run({"train_summary.json": d("train", name, "train_summary.json"),
              "eval.json": d("eval", name, "eval.json"), "per_example.json": d("eval", name, "per_example.json")},
             dest, record)
    self._finished(seed, name, secs, time.time() - t0, dest)

  def run_square(self, seed: int) -> None:
    a, dest, best = self.args, self.res(f"seed{seed}", SQUARE), final_condition(self.args)
    if complete(dest, SQUARE_FILES):
      print(f"seed {seed} {SQUARE}: in {dest} already", flush=True)
      return
    if best is None:
      print(f"seed {seed} {SQUARE}: not run (needs --best_objective and --best_with_cl)", flush=True)
      return
    d = lambda *p: os.path.join(a.run_dir, f"seed{seed}", *p)  # noqa: E731
    student = d("train", best, "student.keras")
    if not os.path.isfile(student):
      print(f"seed {seed} {SQUARE}: not run ({student} is not in this --run_dir: run {best} here first)", flush=True)
      return
    stage = self.eval_stage(f"eval_{SQUARE}", student, d("eval", SQUARE), key=SQUARE)
    t0 = time.time()
    state, _ = run_stages(d(), [stage])
    secs = {"train": 0.0, "eval": state["stages"][stage.name].get("seconds")}
    copy_run({"eval.json": d("eval", SQUARE, "eval.json"), "per_example.json": d("eval", SQUARE, "per_example.json")},
             dest, {"condition": SQUARE, "model_condition": best, "seed": seed, "eval_seed": a.eval_seed,
                    "budget": {SQUARE: flag_digest(self.ff[SQUARE])},
                    "seconds": secs, "teacher_sha256": sha256(self.teacher_path),
                    "commands": {stage.name: state["stages"][stage.name].get("command")}})
    self._finished(seed, SQUARE, secs, time.time() - t0, dest)

  @staticmethod
  def _finished(seed, name, secs, wall, dest) -> None:
    ev = io_utils.read_json(os.path.join(dest, "eval.json"), "eval.json")
    pgd = next((x["accuracy"] for x in ev["attacks"] if x["label"].startswith("PGD-20")), None)
    pgd_text = "-" if pgd is None else f"{pgd:.1%}"
    print(f"finished seed {seed} {name}: train {secs['train'] or 0:.0f} s + eval {secs['eval'] or 0:.0f} s "
          f"(wall {wall / 60:.1f} min); clean {ev['clean_accuracy']:.1%}, PGD-20 {pgd_text}, white-box worst "
          f"{ev['worst_case_white_box']['accuracy']:.1%} -> {dest}", flush=True)


def check_recorded(args) -> None:
  """Refuses a --best_* or a flagfile budget that differs from what earlier runs in --results_dir used.

  The finished runs are never redone, so a changed budget would mix two studies in one table.
  """
  for seed in study_report.discover_seeds(args.results_dir):
    d = os.path.join(args.results_dir, f"seed{seed}")
    records = [os.path.join(d, n, "run.json") for n in [*CONDITIONS, SQUARE]]
    for path in records + [os.path.join(d, "search", "search.json")]:
      if not os.path.isfile(path):
        continue
      run = io_utils.read_json(path, os.path.basename(path))
      for key, digest in run.get("budget", {}).items():
        flagfile = f"{args.flagfiles}_{key}.flags"
        if os.path.isfile(flagfile) and flag_digest(flagfile) != digest:
          raise UserInputError(f"--flagfiles: the flag lines of {flagfile!r} changed since {path} was made; "
                               "restore them (or use another --results_dir)")
      for key in ("best_objective", "best_with_cl"):
        given = getattr(args, key)
        if key in run and given is not None and run[key] != given:
          raise UserInputError(f"--{key}={given}: {path} was made with {run[key]}; keep it (or use another "
                               "--results_dir)")


def main(argv=None) -> int:
  args = parse_args(argv)
  t0, failures = time.time(), []
  if not args.report_only:
    check_recorded(args)
    if args.dataset:
      data_args = [f"--dataset={args.dataset}"]
    else:
      root = prepare_data(args.data, args.run_dir)
      data_args = [f"--dataset=image_folder:{root}", f"--cache_dir={os.path.join(args.run_dir, 'data', 'cache')}"]
    study = Study(args, data_args)
    study.teacher()  # Every run needs it: a failure here ends the study.
    units = [(n, s) for n in CONDITIONS if n in args.conditions for s in args.seeds]
    units += [(SQUARE, s) for s in args.seeds if SQUARE in args.conditions]
    for name, seed in units:  # A failed run is reported and the study goes on with the others.
      try:
        if name == SQUARE:
          study.run_square(seed)
        else:
          study.run_condition(name, seed)
      except UserInputError as e:
        failures.append(f"seed {seed} {name}: {e}")
        print(f"seed {seed} {name}: FAILED: {e}", flush=True)
  res = study_report.write_report(args.results_dir, args.seeds)
  print(study_report.markdown(res))
  print(f"wrote {os.path.join(args.results_dir, 'results.md')}; {(time.time() - t0) / 60:.1f} min this invocation")
  if failures:
    print(f"{len(failures)} run(s) failed (their logs are named above; rerun to retry them):\n  " +
          "\n  ".join(failures), file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  exit_with_status(main)
