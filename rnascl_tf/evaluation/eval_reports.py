"""The reports of one evaluation: eval.json, eval.md and eps_sweep.png, and its console summary."""

import os
from typing import Mapping

from rnascl_tf.evaluation import plots
from rnascl_tf.runtime import artefacts as io_utils


def default_output_dir(model_path: str) -> str:
  """`<model path without .keras>_eval` beside the model: one folder per evaluated model."""
  base = os.path.normpath(model_path)
  if base.endswith(".keras"):
    base = base[:-len(".keras")]
  return base + "_eval"


def report_paths(output_dir: str) -> dict:
  """{"json": eval.json, "markdown": eval.md, "eps_sweep_png": eps_sweep.png} inside `output_dir`."""
  return {"json": os.path.join(output_dir, "eval.json"), "markdown": os.path.join(output_dir, "eval.md"),
          "eps_sweep_png": os.path.join(output_dir, "eps_sweep.png")}


PER_EXAMPLE_FILE = "per_example.json"


def write_per_example(per_example: dict, output_dir: str) -> str:
  """Writes an evaluation's per-example outcomes to `output_dir`/per_example.json (atomically).

  Args:
    per_example: the "per_example" record of `engine.evaluate_model` (plus provenance).
    output_dir: the folder (created if missing).

  Returns:
    The path written.
  """
  path = os.path.join(output_dir, PER_EXAMPLE_FILE)
  io_utils.atomic_write_json(path, per_example)
  return path


def sweep_curve(result: dict) -> list:
  """The (eps, accuracy) points of a result's eps sweep, for `plots.eps_sweep_png`."""
  return [(p["eps"], p["accuracy"]) for p in result["eps_sweep"]["points"]]


def accuracy(entry: dict) -> str:
  """An entry's accuracy to 4 places, marked when gradient masking made it invalid.

  >>> accuracy({"accuracy": 0.5}), accuracy({"accuracy": 0.9, "valid": False})
  ('0.5000', '0.9000 (invalid: gradient masked)')
  """
  return f"{entry['accuracy']:.4f}" + (" (invalid: gradient masked)" if entry.get("valid") is False else "")


def markdown_report(result: dict) -> str:
  """A short markdown summary: the accuracy table, the eps sweep and the sanity checks."""
  model = result.get("model", {})
  data = result.get("dataset", {})
  lines = ["# Robustness evaluation", ""]
  if model:
    lines.append(f"- model: `{model['path']}` ({model['format']})")
  if data:
    lines.append(f"- data: {data['name']} {data['split']} split, {result['num_examples']} examples")
  else:
    lines.append(f"- examples: {result['num_examples']}")
  tm = result["threat_model"]
  lines += [f"- threat model: L-inf, eps = {tm['eps_pixels']} on [0, 1] pixels, model in inference mode",
            f"- seed {result['seed']}, wall time {result.get('wall_seconds', 0):.1f} s", "",
            "| attack | family | backend | accuracy | max perturbation (x/255) |", "|---|---|---|---:|---:|",
            f"| clean | - | - | {result['clean']['accuracy']:.4f} | 0 |"]
  for e in result["attacks"]:
    lines.append(f"| {e['label']} | {e['family']} | {e['backend']} | {accuracy(e)} | "
                 f"{e['max_perturbation'] * 255:.3f} |")
  worst = result["worst_case"]
  lines.append(f"| **worst case** (per example, over the {len(worst['over'])} attacks above) | | | "
               f"**{worst['accuracy']:.4f}** | |")
  if result.get("white_box_valid") is False:
    invalid = next(e for e in result["attacks"] + [result["worst_case_white_box"]] if e.get("valid") is False)
    lines += ["", f"**White-box numbers are invalid**: {invalid['invalid_reason']}. The black-box numbers stand."]
  aa = result["autoattack"]
  if aa.get("ran"):
    lines += ["", f"ART set: {aa['label']}."]
    lines += [f"Not run: {nr['attack']} ({nr['reason']})." for nr in aa["not_run"]]
  sweep = result["eps_sweep"]
  lines += ["", f"## eps sweep ({sweep['attack']})", "", "| eps | accuracy |", "|---|---:|"]
  lines += [f"| {p['eps_pixels']} | {accuracy(p)} |" for p in sweep["points"]]
  sanity = result["sanity"]
  lines += ["", "## Sanity checks: " + ("all passed" if sanity["passed"] else "FAILED: " + ", ".join(sanity["failed"])),
            "", "| check | status | detail |", "|---|---|---|"]
  for name, c in sanity["checks"].items():
    lines.append(f"| {name} | {c['status']} | {c['detail'].replace('|', '/')} |")
  return "\n".join(lines) + "\n"


def write_reports(result: dict, output_dir: str, curve_name: str = "model") -> dict:
  """Writes eval.json, eval.md and eps_sweep.png into `output_dir` (atomically).

  Args:
    result: an evaluation result.
    output_dir: the folder (created if missing).
    curve_name: legend entry of the sweep curve.

  Returns:
    {"json": path, "markdown": path, "eps_sweep_png": path}.
  """
  paths = report_paths(output_dir)
  io_utils.atomic_write_json(paths["json"], result)
  io_utils.atomic_write_text(paths["markdown"], markdown_report(result))
  png = plots.eps_sweep_png({curve_name: sweep_curve(result)},
                            title=f"Accuracy vs L-inf eps ({result['eps_sweep']['attack'].split(',')[0]})",
                            reference_eps=result["threat_model"]["eps"])
  plots.write_png(paths["eps_sweep_png"], png)
  return paths


def summary_lines(result: dict) -> list:
  """One line per number, for the console."""
  lines = [f"clean: {result['clean']['accuracy']:.4f}"]
  lines += [f"{e['label']}: {accuracy(e)}" for e in result["attacks"]]
  lines.append(f"worst case over {len(result['worst_case']['over'])} attacks: {result['worst_case']['accuracy']:.4f}")
  points = result["eps_sweep"]["points"]
  lines.append("eps sweep: " + ", ".join(f"{p['eps_pixels']}: {accuracy(p)}" for p in points))
  sanity = result["sanity"]
  lines.append("sanity: " + ("all passed" if sanity["passed"] else "FAILED " + ", ".join(sanity["failed"])))
  return lines


def compare_curves(results: Mapping[str, dict]) -> bytes:
  """One eps-sweep plot of several evaluated models (e.g. teacher and student), as PNG bytes."""
  first = next(iter(results.values()))
  return plots.eps_sweep_png({name: sweep_curve(r) for name, r in results.items()},
                             reference_eps=first["threat_model"]["eps"])
