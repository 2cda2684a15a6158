"""Tests for rnascl_tf.evaluation.eval_reports: eval.json, eval.md, eps_sweep.png and the comparison plot."""

import json
import os

from rnascl_tf.evaluation import eval_reports
from rnascl_tf.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_reports_written_with_labels(honest, tmp_path):
  paths = eval_reports.write_reports(honest, str(tmp_path / "out"), curve_name="toy")
  data = json.loads(open(paths["json"]).read())
  assert data["schema"] == "rnascl_tf/eval" and data["sanity"]["passed"]
  assert [e["label"] for e in data["attacks"]] == [e["label"] for e in honest["attacks"]]
  text = open(paths["markdown"]).read()
  for e in honest["attacks"]:
    assert e["label"] in text
  assert "worst case" in text and "all passed" in text and "eps sweep" in text
  assert open(paths["eps_sweep_png"], "rb").read(8) == PNG_MAGIC
  assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".tmp")]


def test_sweep_plot_takes_several_named_curves(honest):
  png = eval_reports.compare_curves({"teacher": honest, "student": honest})
  assert png[:8] == PNG_MAGIC
  assert plots.eps_sweep_png({"a": [(0.0, 1.0), (8 / 255, 0.4)], "b": []}, reference_eps=8 / 255)[:8] == PNG_MAGIC


def test_default_output_dir_is_beside_the_model():
  assert eval_reports.default_output_dir("runs/x/teacher.keras") == os.path.normpath("runs/x/teacher_eval")
  assert eval_reports.default_output_dir("export/child/1/") == os.path.normpath("export/child/1_eval")
