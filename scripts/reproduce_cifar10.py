r"""CPU-scale reproduction of RNAS-CL's central claims on real CIFAR-10 (see EXPERIMENTS.md).

    python scripts/reproduce_cifar10.py [--data=../shared/data/cifar10-jpeg.tar.gz] \
        [--run_dir=runs/cifar10_cpu] [--seeds=0] [--runs=ce,logit_kd,ce_kd,...]

For each seed, in <run_dir>/seed<k>/: a robust teacher (PGD-AT) -> an RNAS-CL search in the s3
space -> the searched student retrained once per objective / tutor map of --runs -> every model
evaluated at eps = 8/255 in pixel space (cleverhans PGD-20 etc. + ART's reduced APGD/Square set).
Each stage is `python -m rnascl_tf.<stage>` with its flagfile (flags/cifar10_cpu_*.flags hold the
budget) and is skipped on a rerun when its artefacts exist for the same flags, so a killed run
resumes where it stopped. Ends with <run_dir>/results.json and results.md: one row per model, the
mean and standard deviation over seeds when there are several.

The archive is the JPEG copy of CIFAR-10 described in ../shared/data/README.md; it is extracted once
into <run_dir>/data (safe extraction: no absolute paths, no links outside) and decoded once into a
uint8 cache by the `image_folder` dataset.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tarfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from rnascl_tf.runtime import artefacts as io_utils  # noqa: E402
from rnascl_tf.errors import UserInputError, exit_with_status  # noqa: E402
from rnascl_tf.pipeline import Stage, flagfile_value, run_stages  # noqa: E402
from study_report import seed_list  # noqa: E402  (scripts/ is on the path: this script's folder)

DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar.gz")
# run name -> (objective, tutor map). The order is the table's.
RUNS = {
    "ce": ("ce", "searched"),
    "logit_kd": ("logit_kd", "searched"),
    "ce_kd": ("ce_kd", "searched"),
    "ce_kd_random": ("ce_kd", "random"),
    "ce_kd_same_depth": ("ce_kd", "same_depth"),
    "trades_kd": ("trades_kd", "searched"),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default=DEFAULT_DATA, help="cifar10-jpeg.tar.gz, or a folder with train/ and test/")
  p.add_argument("--run_dir", default=os.path.join("runs", "cifar10_cpu"))
  p.add_argument("--seeds", type=seed_list, default="0",
                 help="comma-separated seeds; each repeats teacher, search and runs")
  p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
  p.add_argument("--flagfiles", default=os.path.join("flags", "cifar10_cpu"),
                 help="prefix of the four flagfiles <prefix>_{teacher,search,train,eval}.flags (the budget)")
  args = p.parse_args(argv)
  args.runs = [r for r in args.runs.split(",") if r.strip()]
  unknown = [r for r in args.runs if r not in RUNS]
  if unknown or not args.runs:
    raise UserInputError(f"--runs: unknown run(s) {unknown}; expected a subset of {', '.join(RUNS)}")
  if not args.seeds:
    raise UserInputError("--seeds: give at least one seed")
  return args


def prepare_data(data: str, run_dir: str) -> str:
  """The folder with train/<class>/ and test/<class>/: `data` itself, or the archive extracted once."""
  if os.path.isdir(data):
    root = data
  else:
    if not os.path.isfile(data):
      raise UserInputError(f"--data: no such file or folder {data!r} (expected cifar10-jpeg.tar.gz, see "
                           "../shared/data/README.md)")
    root = os.path.join(run_dir, "data", "cifar10")
    if not os.path.isdir(os.path.join(root, "train")):
      tmp = root + ".partial"
      shutil.rmtree(tmp, ignore_errors=True)
      print(f"extracting {data} -> {root}", flush=True)
      try:
        with tarfile.open(data) as tar:
          tar.extractall(tmp, filter="data")  # Refuses absolute paths and links leaving tmp.
      except (tarfile.TarError, OSError) as e:
        raise UserInputError(f"--data: cannot extract {data!r}: {e}") from e
      os.replace(tmp, root)  # Atomic: a killed extraction leaves only the .partial folder.
  for split in ("train", "test"):
    if not os.path.isdir(os.path.join(root, split)):
      raise UserInputError(f"--data: {root!r} has no {split}/ folder (expected <root>/{split}/<class>/<image>)")
  return root


def build_stages(args, data_root: str, seed: int) -> list:
  """The stages of one seed, with explicit dependencies (a retrain depends on the search only)."""
  d = lambda *p: os.path.join(args.run_dir, f"seed{seed}", *p)  # noqa: E731
  common = [f"--dataset=image_folder:{data_root}", f"--cache_dir={os.path.join(args.run_dir, 'data', 'cache')}",
            f"--seed={seed}"]
  ff = {k: f"{args.flagfiles}_{k}.flags" for k in ("teacher", "search", "train", "eval")}
  for key, path in ff.items():
    if not os.path.isfile(path):
      raise UserInputError(f"--flagfiles: no {key} flagfile {path!r}")
  epochs = {k: int(flagfile_value(ff[k], "epochs") or 0) for k in ff}
  teacher = d("teacher", "teacher.keras")
  genotype = d("search", "genotype.json")
  stages = [
      Stage("teacher", "rnascl_tf.train_teacher", [f"--flagfile={ff['teacher']}", *common,
                                                   f"--model_dir={d('teacher')}"],
            [teacher, d("teacher", "teacher_manifest.json")], epochs["teacher"], ff["teacher"], d("teacher")),
      Stage("search", "rnascl_tf.search", [f"--flagfile={ff['search']}", *common, f"--model_dir={d('search')}",
                                           f"--teacher_path={teacher}"],
            [genotype], epochs["search"], ff["search"], d("search"), after=["teacher"]),
      Stage("eval_teacher", "rnascl_tf.evaluate", [f"--flagfile={ff['eval']}", *common, f"--model={teacher}",
                                                   f"--output_dir={d('eval', 'teacher')}"],
            [d("eval", "teacher", "eval.json")], flagfile=ff["eval"], after=["teacher"]),
  ]
  for name in args.runs:
    objective, tutor_map = RUNS[name]
    stages.append(Stage(f"train_{name}", "rnascl_tf.train",
                        [f"--flagfile={ff['train']}", *common, f"--model_dir={d('train', name)}",
                         f"--genotype={genotype}", f"--teacher_path={teacher}", f"--objective={objective}",
                         f"--tutor_map={tutor_map}"],
                        [d("train", name, "student.keras"), d("train", name, "train_summary.json")],
                        epochs["train"], ff["train"], d("train", name), after=["search"]))
    stages.append(Stage(f"eval_{name}", "rnascl_tf.evaluate",
                        [f"--flagfile={ff['eval']}", *common, f"--model={d('train', name, 'student.keras')}",
                         f"--output_dir={d('eval', name)}"],
                        [d("eval", name, "eval.json")], flagfile=ff["eval"], after=[f"train_{name}"]))
  return stages


def _attack_accuracy(ev: dict, prefix: str):
  return next((a["accuracy"] for a in ev["attacks"] if a["label"].startswith(prefix)), None)


def model_row(ev: dict, summary: dict, seconds: dict) -> dict:
  """One model's numbers from its eval.json, train summary (or teacher manifest) and stage times."""
  art = [a["accuracy"] for a in ev["attacks"] if a["backend"].startswith("ART")]
  return {
      "params": summary.get("params"), "flops": summary.get("flops"),
      "clean": ev["clean_accuracy"], "fgsm": _attack_accuracy(ev, "FGSM"), "pgd20": _attack_accuracy(ev, "PGD-20"),
      "art_min": min(art) if art else None, "worst_case": ev["worst_case"]["accuracy"],
      "examples": ev["num_examples"], "sanity_passed": ev["sanity"]["passed"], "seconds": seconds,
  }


def _teacher_cost(path: str, teacher_eval: dict) -> dict:
  """Parameters and FLOPs of the teacher, counted layer by layer like the students'."""
  from rnascl_tf.models import cost  # Lazy: pulls in TensorFlow.

  return cost.count_model_cost(io_utils.load_keras_model(path, "teacher"), teacher_eval["model"]["input_shape"])


def collect(args, state_by_seed: dict) -> dict:
  """{"models": {name: {"seeds": {seed: row}, "mean": ..., "std": ...}}, ...} from the run folders."""
  models = {}
  for seed, state in state_by_seed.items():
    d = lambda *p: os.path.join(args.run_dir, f"seed{seed}", *p)  # noqa: E731
    secs = {k: v["seconds"] for k, v in state["stages"].items()}
    teacher_eval = io_utils.read_json(d("eval", "teacher", "eval.json"), "eval.json")
    rows = {"teacher": model_row(teacher_eval, _teacher_cost(d("teacher", "teacher.keras"), teacher_eval),
                                 {"train": secs.get("teacher"), "eval": secs.get("eval_teacher")})}
    for name in args.runs:
      rows[name] = model_row(io_utils.read_json(d("eval", name, "eval.json"), "eval.json"),
                             io_utils.read_json(d("train", name, "train_summary.json"), "train summary"),
                             {"train": secs.get(f"train_{name}"), "eval": secs.get(f"eval_{name}")})
      rows[name]["objective"], rows[name]["tutor_map"] = RUNS[name]
    rows["teacher"]["search_seconds"] = secs.get("search")
    for name, row in rows.items():
      models.setdefault(name, {"seeds": {}})["seeds"][str(seed)] = row
  for entry in models.values():
    rows = list(entry["seeds"].values())
    for key in ("clean", "fgsm", "pgd20", "art_min", "worst_case"):
      vals = [r[key] for r in rows if r[key] is not None]
      entry.setdefault("mean", {})[key] = statistics.fmean(vals) if vals else None
      entry.setdefault("std", {})[key] = statistics.stdev(vals) if len(vals) > 1 else None
  return models


def _pct(entry: dict, key: str) -> str:
  m, s = entry["mean"][key], entry["std"][key]
  if m is None:
    return "-"
  return f"{100 * m:.1f}%" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}%"


def table(models: dict, seeds: list) -> str:
  """The markdown results table."""
  lines = [f"Seeds: {', '.join(map(str, seeds))} (mean ± std over seeds when more than one). eps = 8/255, "
           "pixel space. ART (min) = the lowest accuracy among ART's reduced APGD-CE / APGD-T / Square set "
           "(not AutoAttack); worst case = an example counts as robust only if it survives every attack.",
           "",
           "| model | objective | tutor map | params | MFLOPs | clean | FGSM | PGD-20 | ART (min) | worst case "
           "| train s | examples |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, entry in models.items():
    first = next(iter(entry["seeds"].values()))
    train_s = [r["seconds"]["train"] for r in entry["seeds"].values() if r["seconds"]["train"]]
    flops = first["flops"]
    lines.append(
        f"| {name} | {first.get('objective', 'PGD-AT')} | {first.get('tutor_map', '-')} | "
        f"{first['params']:,} | {'-' if not flops else f'{flops / 1e6:.2f}'} | {_pct(entry, 'clean')} | "
        f"{_pct(entry, 'fgsm')} | {_pct(entry, 'pgd20')} | {_pct(entry, 'art_min')} | "
        f"{_pct(entry, 'worst_case')} | {statistics.fmean(train_s):.0f} | {first['examples']} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  args = parse_args(argv)
  t0 = time.time()
  data_root = prepare_data(args.data, args.run_dir)
  states = {}
  for seed in args.seeds:
    print(f"== seed {seed}", flush=True)
    states[seed], _ = run_stages(os.path.join(args.run_dir, f"seed{seed}"), build_stages(args, data_root, seed))
  models = collect(args, states)
  md = table(models, args.seeds)
  io_utils.atomic_write_json(os.path.join(args.run_dir, "results.json"),
                             {"seeds": args.seeds, "runs": {k: RUNS[k] for k in args.runs}, "models": models,
                              "wall_minutes_this_invocation": round((time.time() - t0) / 60, 1)})
  io_utils.atomic_write_text(os.path.join(args.run_dir, "results.md"), md)
  print(md)
  print(f"wrote {os.path.join(args.run_dir, 'results.md')} and results.json; "
        f"{(time.time() - t0) / 60:.1f} min this invocation")
  return 0


if __name__ == "__main__":
  exit_with_status(main)
