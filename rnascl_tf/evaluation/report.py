"""report.md and a self-contained report.html of a pipeline run, built from its artefacts only.

The report is a list of blocks (headings, paragraphs, tables, images, code) rendered twice: as
Markdown next to its PNGs and as one HTML file with the images embedded (base64), so it can be
mailed or archived alone.
"""

import base64
import fractions
import html
import json
import os
from typing import Dict, List, Optional, Sequence

from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.evaluation import eval_reports, plots
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.robust.attack_specs import format_pixels


def _load(path: str) -> Optional[dict]:
  return json.load(open(path)) if os.path.exists(path) else None


def _pct(x) -> str:
  return "-" if x is None else f"{100 * x:.1f}%"


class _Doc:
  """Blocks rendered to Markdown and to HTML (images: relative paths vs embedded PNG)."""

  def __init__(self, root: str):
    self.root, self.blocks = root, []

  def h(self, level: int, text: str):
    self.blocks.append(("h", level, text))

  def p(self, text: str):
    self.blocks.append(("p", text))

  def table(self, header: Sequence[str], rows: Sequence[Sequence]):
    self.blocks.append(("table", list(header), [[str(c) for c in r] for r in rows]))

  def image(self, path: str, caption: str):
    if os.path.exists(path):
      self.blocks.append(("img", path, caption))

  def code(self, text: str):
    self.blocks.append(("code", text))

  def markdown(self) -> str:
    out = []
    for b in self.blocks:
      if b[0] == "h":
        out.append("#" * b[1] + " " + b[2])
      elif b[0] == "p":
        out.append(b[1])
      elif b[0] == "table":
        out.append("| " + " | ".join(b[1]) + " |\n|" + "---|" * len(b[1]) + "\n" +
                   "\n".join("| " + " | ".join(r) + " |" for r in b[2]))
      elif b[0] == "img":
        out.append(f"![{b[2]}]({os.path.relpath(b[1], self.root)})\n\n*{b[2]}*")
      else:
        out.append("```\n" + b[1] + "\n```")
    return "\n\n".join(out) + "\n"

  def html(self, title: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px}"
           "th{background:#eee}pre{background:#f5f5f5;padding:1em;overflow-x:auto}"
           "img{max-width:100%;border:1px solid #ddd}figcaption{font-style:italic;color:#555}"
           "</style></head><body>"]
    for b in self.blocks:
      if b[0] == "h":
        out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
      elif b[0] == "p":
        out.append(f"<p>{e(b[1])}</p>")
      elif b[0] == "table":
        out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in b[1]) + "</tr>" +
                   "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2]) + "</table>")
      elif b[0] == "img":
        data = base64.b64encode(open(b[1], "rb").read()).decode()
        out.append(f"<figure><img alt='{e(b[2])}' src='data:image/png;base64,{data}'>"
                   f"<figcaption>{e(b[2])}</figcaption></figure>")
      else:
        out.append(f"<pre>{e(b[1])}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _attack_rows(evals: Dict[str, Optional[dict]]) -> List[List[str]]:
  """One row per attack label (union over models), with each model's accuracy and the backend."""
  labels, backend = [], {}
  for r in evals.values():
    for a in (r or {}).get("attacks", []):
      if a["label"] not in labels:
        labels.append(a["label"])
        backend[a["label"]] = a["backend"]
  rows = []
  for label in labels:
    entries = [next((a for a in (r or {}).get("attacks", []) if a["label"] == label), {}) for r in evals.values()]
    marks = [" (invalid: gradient masked)" if e.get("valid") is False else "" for e in entries]
    rows.append([label, backend[label]] + [_pct(e.get("accuracy")) + m for e, m in zip(entries, marks)])
  return rows


def _short_label(label: str) -> str:
  """'PGD-20' of 'PGD-20 (Linf, eps=8/255, ...)'."""
  return label.split(" (")[0]


def headline_table(evals: Dict[str, Optional[dict]], costs: Dict[str, Optional[dict]]) -> List[List[str]]:
  """Header and one row per model: parameters, MFLOPs, clean, the main PGD attack and the worst case.

  Args:
    evals: model name -> its eval.json (None if missing).
    costs: model name -> {"params", "flops"} (None if unknown).

  Returns:
    [header, row, ...] of strings ("-" where a number is missing).

  >>> e = {"clean_accuracy": 0.9, "attacks": [{"attack": "pgd", "label": "PGD-20 (Linf)", "accuracy": 0.5}],
  ...      "worst_case": {"accuracy": 0.4}}
  >>> headline_table({"student": e}, {"student": {"params": 4562, "flops": 386000}})
  [['', 'params', 'MFLOPs', 'clean', 'PGD-20', 'worst case'], ['student', '4,562', '0.386', '90.0%', '50.0%', '40.0%']]
  """
  pgd = {name: next((a for a in (r or {}).get("attacks", []) if a.get("attack") == "pgd"), None)
         for name, r in evals.items()}
  pgd_name = next((_short_label(a["label"]) for a in pgd.values() if a), "PGD")
  rows = [["", "params", "MFLOPs", "clean", pgd_name, "worst case"]]
  for name, r in evals.items():
    cost = costs.get(name)
    rows.append([name, f"{cost['params']:,}" if cost else "-", f"{cost['flops'] / 1e6:.3f}" if cost else "-",
                 _pct((r or {}).get("clean_accuracy")), _pct((pgd[name] or {}).get("accuracy")),
                 _pct(((r or {}).get("worst_case") or {}).get("accuracy"))])
  return rows


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """Rows as aligned console text: the first column left-aligned, the numbers right-aligned."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                   for r in rows)


def validation_labels(record: Optional[dict]) -> Dict[str, str]:
  """Legend text of the validation curves, naming the attack and eps recorded in a manifest's flags.

  >>> validation_labels({"flags": {"eps": "8/255", "val_attack_steps": 10}})["val_pgd_acc"]
  'validation, PGD-10 (L-inf, eps=8/255)'
  """
  flag_values = (record or {}).get("flags") or {}
  try:
    eps = format_pixels(float(fractions.Fraction(str(flag_values["eps"]))), "inf")
    attack = f"PGD-{int(flag_values['val_attack_steps'])} (L-inf, eps={eps})"
  except (KeyError, TypeError, ValueError, ZeroDivisionError):
    attack = "PGD (settings not recorded)"
  return {"val_clean_acc": "validation, clean", "val_pgd_acc": f"validation, {attack}"}


def _teacher_cost(teacher_eval: Optional[dict]) -> Optional[dict]:
  """Parameters and FLOPs of the evaluated teacher, counted layer by layer like the student's."""
  from rnascl_tf.models import cost as cost_lib  # Lazy: pulls in TF.

  path = (teacher_eval or {}).get("model", {}).get("path", "")
  if not path.endswith(".keras") or not os.path.exists(path):
    return None
  model = io_utils.load_keras_model(path, "teacher")
  return cost_lib.count_model_cost(model, teacher_eval["model"]["input_shape"])


def write_report(run_dir: str, commands: Dict[str, Optional[str]]) -> Dict[str, str]:
  """Writes report.md, report.html and the comparison PNGs of a pipeline run folder.

  Args:
    run_dir: the pipeline's --run_dir.
    commands: stage name -> the exact command that produced it (None if skipped or not run).

  Returns:
    {"markdown": path, "html": path, "headline": the teacher-vs-student table as console text}.
  """
  d = lambda *p: os.path.join(run_dir, *p)  # noqa: E731
  genotype = _load(d("search", "genotype.json"))
  summary = _load(d("train", "train_summary.json"))
  evals = {"teacher": _load(d("eval_teacher", "eval.json")), "student (exported SavedModel)":
           _load(d("eval_student", "eval.json"))}
  doc = _Doc(run_dir)
  doc.h(1, "RNAS-CL run report")
  dataset = (genotype or {}).get("dataset", "?")
  eps = next((r["threat_model"]["eps"] for r in evals.values() if r), None)
  doc.p(f"Run folder: {os.path.abspath(run_dir)}. Dataset: {dataset}. Threat model: L-inf, eps = "
        f"{eps if eps is None else round(eps, 4)} in [0, 1] pixel units ({'-' if eps is None else round(eps * 255, 1)}/255), "
        "attacks run on the models in inference mode; every number names its attack and backend.")

  t_cost = _teacher_cost(evals["teacher"])
  s_cost = {"params": summary["params"], "flops": summary["flops"]} if summary else None
  headline = headline_table(evals, dict(zip(evals, (t_cost, s_cost))))
  doc.h(2, "Headline")
  doc.table(headline[0], headline[1:])
  if genotype:
    doc.p(f"Search ({genotype['search_space']['name']} space): {genotype_lib.cost_savings(genotype)}.")

  doc.h(2, "Teacher vs student")
  rows = [["parameters", f"{t_cost['params']:,}" if t_cost else "-", f"{summary['params']:,}" if summary else "-"],
          ["MFLOPs (multiply-accumulates)", f"{t_cost['flops'] / 1e6:.3f}" if t_cost else "-",
           f"{summary['flops'] / 1e6:.3f}" if summary else "-"],
          ["clean accuracy"] + [_pct((r or {}).get("clean_accuracy")) for r in evals.values()]]
  doc.table(["", "teacher", "student (exported SavedModel)"], rows)
  doc.table(["attack", "backend"] + list(evals), _attack_rows(evals) + [
      ["worst case over all attacks (per example)", "-"] + [_pct(((r or {}).get("worst_case") or {}).get("accuracy"))
                                                         for r in evals.values()]])
  if summary:
    doc.p(f"Student objective: {summary['objective']} (adversarial training: {summary['adv_mode']}), tutor map: "
          f"{summary['tutor_map_kind']}; checkpoint chosen at epoch {summary['best']['epoch'] if summary['best'] else '-'} "
          "by validation-split PGD accuracy.")

  if genotype:
    doc.h(2, "Searched architecture")
    doc.p(f"Search space {genotype['search_space']['name']}: {genotype_lib.cost_savings(genotype)}.")
    doc.table(["block", "searched width", "maximum", "options", "probability of the choice"],
              [[b["name"], b["width"], b["width_options"][0], ", ".join(map(str, b["width_options"])),
                f"{max(b['width_probs']):.2f}"] for b in genotype["blocks"]])
    doc.image(d("search", "widths.png"), "Searched width per block against the maximum")
    doc.h(2, "Tutors: which teacher layer supervises each student layer")
    doc.image(d("search", "tutor_heatmap.png"), "Learned tutor distribution (rows: student layers; x: chosen tutor)")
    doc.table(["student layer", "->", "teacher layer", "probability"],
              [[s["name"], "->", s["tutor"], f"{max(s['tutor_probs']):.2f}"] for s in genotype["student_layers"]])

  doc.h(2, "Training and search curves")
  teacher_manifest = _load(d("teacher", "teacher_manifest.json"))
  for stage, record, title in (("teacher", teacher_manifest, "Teacher: validation accuracy"),
                               ("train", summary, "Student retraining: validation accuracy")):
    state = _load(d(stage, "run_state.json"))
    if state and state.get("history"):
      path = d("report_files", f"{stage}_curves.png")
      plots.write_png(path, plots.curves_png(state["history"], ["val_clean_acc", "val_pgd_acc"], title,
                                             ylabel="accuracy", labels=validation_labels(record),
                                             chosen_epoch=(state.get("best") or {}).get("epoch")))
      doc.image(path, f"{title}; the dashed line marks the checkpoint kept (best validation accuracy under attack)")
  doc.image(d("search", "search_curves.png"), "Search: width and tutor entropy (nats), temperature, expected MFLOPs")

  present = {k: v for k, v in evals.items() if v}
  if present:
    doc.h(2, "Robustness against eps")
    path = d("report_files", "eps_sweep_teacher_vs_student.png")
    plots.write_png(path, eval_reports.compare_curves(present))
    doc.image(path, "PGD accuracy against the L-inf budget, teacher and student")
    doc.h(2, "Sanity checks")
    rows = []
    for name, r in present.items():
      for check, c in r["sanity"]["checks"].items():
        rows.append([name, check, c["status"], c.get("detail", "")])
    doc.table(["model", "check", "status", "detail"], rows)

  doc.h(2, "Reproduce")
  doc.p("Each stage's exact command, in order (run from the repository root; a stage's flagfile holds its flags):")
  doc.code("\n".join(c for c in commands.values() if c) or "(all stages were skipped in this run: see logs/)")
  export = next(iter(sorted(os.listdir(d("export"))) if os.path.isdir(d("export")) else []), None)
  if export:
    doc.h(2, "Serving")
    base = os.path.abspath(d("export"))
    doc.p(f"Exported SavedModel: {os.path.join(base, export)} (versions inside). Serve it with TF Serving and query REST:")
    doc.code(f"tensorflow_model_server --rest_api_port=8501 --model_name={export} --model_base_path={os.path.join(base, export)}\n"
             f"curl -X POST http://localhost:8501/v1/models/{export}:predict \\\n"
             "  -d '{\"signature_name\": \"serving_default\", \"instances\": [<H x W x C nested list of [0, 1] pixels>]}'")
  paths = {"markdown": d("report.md"), "html": d("report.html")}
  io_utils.atomic_write_text(paths["markdown"], doc.markdown())
  io_utils.atomic_write_text(paths["html"], doc.html("RNAS-CL run report"))
  return {**paths, "headline": format_table(headline)}
