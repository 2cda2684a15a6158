"""scripts/study_report.py: the paired bootstrap on hand-checkable data, and the report of a synthetic
results folder (means over seeds, paired differences, missing runs, figures)."""

import importlib
import json
import os
import sys

import numpy as np
import pytest

import helpers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _module():
  scripts = os.path.join(helpers.REPO, "scripts")
  if scripts not in sys.path:
    sys.path.insert(0, scripts)
  return importlib.import_module("study_report")


def _first(k, n=100):
  """Correct on the first k of n images."""
  return np.arange(n) < k


@pytest.mark.parametrize("a, b, diff, low, high", [
    ([_first(50)], [_first(50)], 0.0, 0.0, 0.0),                    # identical models: exactly 0, interval [0, 0]
    ([_first(60)], [_first(50)], 10.0, 4.0, 16.0),                  # 10 more of 100 images: +10 points
    ([_first(50)], [_first(60)], -10.0, -16.0, -4.0),
    ([_first(60), _first(70)], [_first(50), _first(50)], 15.0, 3.0, 30.0),  # two seeds: +10 and +20, resampled
])
def test_paired_bootstrap_hand_checkable(a, b, diff, low, high):
  r = _module().paired_bootstrap(np.array(a), np.array(b), resamples=2000, seed=0)
  assert r["diff"] == pytest.approx(diff, abs=1e-9)
  assert r["seeds"] == len(a) and r["images"] == 100 and r["resamples"] == 2000
  if low == high:
    assert r["low"] == r["high"] == pytest.approx(low)
  else:
    # a is never worse than b image by image here, so no resample can change sign; the width is the
    # binomial spread of the 10 (20) differing images among 100.
    assert low <= r["low"] < diff < r["high"] <= high


def test_paired_bootstrap_is_reproducible_and_checks_shapes():
  mod = _module()
  rng = np.random.default_rng(1)
  a, b = rng.random((3, 200)) < 0.5, rng.random((3, 200)) < 0.4
  assert mod.paired_bootstrap(a, b) == mod.paired_bootstrap(a, b)
  assert mod.paired_bootstrap(a, b, seed=1)["low"] != mod.paired_bootstrap(a, b, seed=2)["low"]
  with pytest.raises(ValueError, match="equal non-empty"):
    mod.paired_bootstrap(a, b[:, :10])


def _write_run(folder, clean, worst, pgd=None, flops=1e6, params=1000, run=None, images="h0", objective="x"):
  """A synthetic finished run: bool arrays of per-image outcomes -> eval.json, per_example.json, ..."""
  os.makedirs(folder, exist_ok=True)
  pgd = worst if pgd is None else pgd
  bits = lambda v: "".join("1" if x else "0" for x in v)  # noqa: E731
  label = "PGD-20 (Linf, eps=8/255, step=2/255, 1 restart, cleverhans)"
  n = len(clean)
  ev = {"clean_accuracy": float(np.mean(clean)), "num_examples": n, "white_box_valid": True,
        "attacks": [{"label": label, "accuracy": float(np.mean(pgd))}],
        "worst_case_white_box": {"accuracy": float(np.mean(worst)), "over": [label]}}
  pe = {"images_sha256": images, "correct": {"clean": bits(clean), "worst_case_white_box": bits(worst),
                                             "attacks": {label: bits(pgd)}}}
  for name, obj in [("eval.json", ev), ("per_example.json", pe), ("run.json", run or {}),
                    ("train_summary.json", {"params": params, "flops": flops, "objective": objective})]:
    with open(os.path.join(folder, name), "w") as f:
      json.dump(obj, f)


def test_report_of_a_synthetic_results_dir(tmp_path):
  mod = _module()
  r = tmp_path / "results"
  clean = _first(80)
  for seed, base in [(0, 30), (1, 40)]:
    _write_run(r / f"seed{seed}" / "trades", clean, _first(base))
    _write_run(r / f"seed{seed}" / "ard", clean, _first(base + 10), flops=2e6)
    _write_run(r / f"seed{seed}" / "best_cl", clean, _first(base + 15), run={"best_objective": "ard"})
  _write_run(r / "seed0" / "rslad", clean, _first(20), images="other")  # evaluated on other images
  _write_run(r / "teacher", _first(90), _first(45))
  res = mod.write_report(str(r), resamples=500)
  assert res["seeds"] == [0, 1] and res["best_objective"] == "ard" and res["final_condition"] is None
  ard = res["conditions"]["ard"]
  assert ard["worst"]["mean"] == pytest.approx(0.45) and ard["worst"]["std"] == pytest.approx(np.std([.4, .5], ddof=1))
  assert ard["flops"]["mean"] == 2e6 and ard["clean"]["std"] == 0.0
  assert {"condition": "adaad", "seed": 0} in res["missing"] and {"condition": "rslad", "seed": 1} in res["missing"]
  assert {"condition": "ard", "seed": 0} not in res["missing"]
  q1 = {(e["a"], e["b"]): e for e in res["questions"]["Q1"]["comparisons"]}
  assert q1[("ard", "trades")]["worst"]["diff"] == pytest.approx(10.0)
  assert q1[("ard", "trades")]["worst"]["seeds_used"] == [0, 1] and q1[("ard", "trades")]["clean"]["diff"] == 0.0
  assert q1[("rslad", "trades")]["worst"]["status"] == "images differ"
  assert q1[("adaad", "trades")]["worst"]["status"] == "missing"
  q2 = res["questions"]["Q2"]["comparisons"][0]
  assert (q2["a"], q2["b"]) == ("best_cl", "ard") and q2["worst"]["diff"] == pytest.approx(5.0)
  assert all(e["status"] == "not decided" for e in res["questions"]["Q4"]["comparisons"])
  assert any("different sets of test images" in n for n in res["notes"])
  md = (r / "results.md").read_text()
  assert "| ard | 2 | 1,000 | 2.00 | 80.0 ± 0.0 | 45.0 ± 7.1 | 45.0 ± 7.1 |" in md
  assert "| ard vs trades | 2 | +0.0 [+0.0, +0.0] |" in md and "adaad (seed 0)" in md
  assert "Teacher (shared by every run): clean 90.0, PGD-20 45.0, worst case 45.0" in md
  assert "--best_objective=ard" in md  # the suggestion: best_cl is not a Q1 condition
  saved = json.loads((r / "results.json").read_text())
  assert saved["questions"]["Q1"]["comparisons"][0]["worst"]["diff"] == pytest.approx(10.0)
  for name in ("fig_q1.png", "fig_q2.png", "fig_q3.png", "fig_q4.png", "fig_mflops.png"):
    assert (r / name).read_bytes()[:8] == PNG_MAGIC


def test_report_of_an_empty_results_dir_lists_everything_missing(tmp_path):
  mod = _module()
  res = mod.write_report(str(tmp_path), seeds=[0])
  assert [m["condition"] for m in res["missing"]] == mod.expected_conditions()
  assert "Teacher (shared by every run): missing" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("text, seeds", [("0,1,2", [0, 1, 2]), (" 3 ,", [3]), ("", [])])
def test_seed_list(text, seeds):
  assert _module().seed_list(text) == seeds


def test_main_refuses_a_missing_results_dir(tmp_path):
  from rnascl_tf.errors import UserInputError
  with pytest.raises(UserInputError, match="--results_dir: no such folder"):
    _module().main([f"--results_dir={tmp_path / 'nope'}"])
  assert not (tmp_path / "nope").exists()
