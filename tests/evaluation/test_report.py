"""The pipeline report (report.md / report.html) built from a tiny fake run folder."""

import json
import os

import helpers
from rnascl_tf.evaluation import report
from rnascl_tf.models import cost


def _eval(clean, attacks, worst, model_path="", shape=helpers.SHAPE):
  """A minimal eval.json: what the report reads of it."""
  return {
      "model": {"path": model_path, "input_shape": list(shape)},
      "threat_model": {"eps": 8 / 255},
      "clean_accuracy": clean,
      "attacks": [{"label": label, "backend": backend, "accuracy": acc} for label, backend, acc in attacks],
      "worst_case": {"accuracy": worst},
      "eps_sweep": {"points": [{"eps": 0.0, "accuracy": clean}, {"eps": 8 / 255, "accuracy": worst}]},
      "sanity": {"checks": {"adv_le_clean": {"status": "pass", "detail": "ok"}}},
  }


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f)


def test_report_tables_hold_the_numbers_of_the_eval_files(tmp_path):
  run = str(tmp_path / "run")
  teacher_path = helpers.save_tiny_teacher(str(tmp_path / "teacher.keras"))
  _write(os.path.join(run, "eval_teacher", "eval.json"), _eval(
      0.8125, [("pgd20", "cleverhans", 0.4234), ("square", "art", 0.5)], 0.401, model_path=teacher_path))
  _write(os.path.join(run, "eval_student", "eval.json"), _eval(0.9, [("pgd20", "cleverhans", 0.35)], 0.3))
  _write(os.path.join(run, "train", "train_summary.json"), {
      "params": 12345, "flops": 2_500_000, "objective": "rnas_cl", "adv_mode": "pgd", "tutor_map_kind": "searched",
      "best": {"epoch": 3}})
  commands = {"train_teacher": "python -m rnascl_tf.train_teacher --flagfile=t.flags", "search": None}

  paths = report.write_report(run, commands)

  md = open(paths["markdown"], encoding="utf-8").read()
  teacher = helpers.tiny_teacher()
  t_cost = cost.count_model_cost(teacher, helpers.SHAPE)  # The report counts the teacher like the student.
  for row in (f"| parameters | {teacher.count_params():,} | 12,345 |",
              f"| MFLOPs (multiply-accumulates) | {t_cost['flops'] / 1e6:.3f} | 2.500 |",
              "| clean accuracy | 81.2% | 90.0% |",
              "| pgd20 | cleverhans | 42.3% | 35.0% |",
              "| square | art | 50.0% | - |",  # Run on the teacher only.
              "| worst case over all attacks (per example) | - | 40.1% | 30.0% |",
              "| teacher | adv_le_clean | pass | ok |",
              "| student (exported SavedModel) | adv_le_clean | pass | ok |"):
    assert row in md, f"missing row {row!r} in:\n{md}"
  assert "eps = 0.0314 in [0, 1] pixel units (8.0/255)" in md
  assert "| student (exported SavedModel) | 12,345 | 2.500 | 90.0% | - | 30.0% |" in md  # The headline table.
  assert paths["headline"].splitlines()[2].split()[-4:] == ["2.500", "90.0%", "-", "30.0%"]
  assert "checkpoint chosen at epoch 3" in md
  assert "python -m rnascl_tf.train_teacher --flagfile=t.flags" in md
  assert "Searched architecture" not in md  # No search/genotype.json in this run.
  assert os.path.exists(os.path.join(run, "report_files", "eps_sweep_teacher_vs_student.png"))

  page = open(paths["html"], encoding="utf-8").read()
  assert "<td>81.2%</td><td>90.0%</td>" in page and "data:image/png;base64," in page


def test_headline_table_and_its_console_text():
  teacher = {"clean_accuracy": 0.944, "worst_case": {"accuracy": 0.549},
             "attacks": [{"attack": "fgsm", "label": "FGSM (Linf, eps=25.5/255)", "accuracy": 0.666},
                         {"attack": "pgd", "label": "PGD-20 (Linf, eps=25.5/255, step=0.025)", "accuracy": 0.577}]}
  rows = report.headline_table({"teacher": teacher, "student": None},
                               {"teacher": {"params": 78426, "flops": 3_052_000}, "student": None})
  assert rows == [["", "params", "MFLOPs", "clean", "PGD-20", "worst case"],
                  ["teacher", "78,426", "3.052", "94.4%", "57.7%", "54.9%"],
                  ["student", "-", "-", "-", "-", "-"]]
  assert report.format_table(rows).splitlines() == [
      "         params  MFLOPs  clean  PGD-20  worst case",
      "teacher  78,426   3.052  94.4%   57.7%       54.9%",
      "student       -       -      -       -           -"]


def test_validation_curve_labels_name_the_attack():
  labels = report.validation_labels({"flags": {"eps": "0.1", "val_attack_steps": 10}})
  assert labels == {"val_clean_acc": "validation, clean", "val_pgd_acc": "validation, PGD-10 (L-inf, eps=25.5/255)"}
  assert report.validation_labels(None)["val_pgd_acc"] == "validation, PGD (settings not recorded)"
