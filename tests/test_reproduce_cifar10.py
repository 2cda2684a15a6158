"""scripts/reproduce_cifar10.py: argument checks, the results table, and a tiny end-to-end run on a
generated image-folder archive (3 classes of 8x8 images) that is resumed without redoing anything."""

import importlib
import json
import os
import sys
import tarfile

import pytest

import helpers
from rnascl_tf.errors import UserInputError

SCRIPT = os.path.join("scripts", "reproduce_cifar10.py")
TINY = {
    "teacher": ["--teacher_arch=small_cnn", "--teacher_width=0.25", "--adv_mode=pgd", "--eps=0.1",
                "--step_size=0.05", "--attack_steps=2", "--val_attack_steps=2", "--val_examples=8",
                "--test_attack_steps=2", "--epochs=1", "--steps_per_epoch=2", "--batch_size=8", "--verbose=2"],
    "search": ["--search_space=tiny", "--epochs=2", "--steps_per_epoch=2", "--batch_size=8", "--verbose=2"],
    "train": ["--eps=0.1", "--step_size=0.05", "--attack_steps=2", "--val_attack_steps=2", "--val_examples=8",
              "--test_attack_steps=2", "--epochs=1", "--steps_per_epoch=2", "--batch_size=8", "--verbose=2"],
    "eval": ["--eps=0.1", "--step_size=0.05", "--attacks=fgsm,pgd20", "--eps_sweep=0,0.1",
             "--autoattack=none", "--blackbox_queries=20", "--batch_size=8"],
}


def _module():
  scripts = os.path.join(helpers.REPO, "scripts")
  if scripts not in sys.path:
    sys.path.insert(0, scripts)
  return importlib.import_module("reproduce_cifar10")


@pytest.mark.parametrize("argv, match", [(["--runs=ce,nope"], "unknown run"), (["--seeds=,"], "at least one seed")])
def test_bad_arguments_are_named(argv, match):
  with pytest.raises(UserInputError, match=match):
    _module().parse_args(argv)


def test_missing_data_is_named(tmp_path):
  with pytest.raises(UserInputError, match="--data: no such file"):
    _module().prepare_data(str(tmp_path / "nope.tar.gz"), str(tmp_path))


def test_table_reports_mean_and_std_over_seeds():
  mod = _module()
  row = lambda clean, pgd: {"params": 1234, "flops": 5e6, "clean": clean, "fgsm": None, "pgd20": pgd,  # noqa: E731
                            "art_min": None, "worst_case": pgd, "examples": 10, "seconds": {"train": 60.0},
                            "objective": "ce_kd", "tutor_map": "searched"}
  models = {"ce_kd": {"seeds": {"0": row(0.5, 0.1), "1": row(0.7, 0.3)}}}
  for entry in models.values():
    entry["mean"] = {"clean": 0.6, "fgsm": None, "pgd20": 0.2, "art_min": None, "worst_case": 0.2}
    entry["std"] = {"clean": 0.1414, "fgsm": None, "pgd20": 0.1414, "art_min": None, "worst_case": 0.1414}
  line = mod.table(models, [0, 1]).splitlines()[-1]
  assert line == "| ce_kd | ce_kd | searched | 1,234 | 5.00 | 60.0 ± 14.1% | - | 20.0 ± 14.1% | - | 20.0 ± 14.1% | 60 | 10 |"


@pytest.mark.slow  # ~9 subprocess stages on a generated 8x8 image folder: ~2-3 min on 2 cores.
def test_tiny_reproduction_end_to_end_and_resume(tmp_path):
  root = tmp_path / "imgs"
  helpers.write_image_folder(str(root), "train", per_class=16, size=(8, 8), fmt="jpg")
  helpers.write_image_folder(str(root), "test", per_class=4, size=(8, 8), fmt="jpg")
  archive = tmp_path / "tiny.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    for split in ("train", "test"):
      tar.add(root / split, arcname=split)
  for stage, lines in TINY.items():
    (tmp_path / f"tiny_{stage}.flags").write_text("\n".join(lines) + "\n")
  run_dir = tmp_path / "run"
  args = [f"--data={archive}", f"--run_dir={run_dir}", f"--flagfiles={tmp_path / 'tiny'}",
          "--runs=ce_kd,ce_kd_random"]
  proc = helpers.run_cli(SCRIPT, *args, timeout=900)
  assert os.path.isdir(run_dir / "data" / "cifar10" / "train" / "emu")
  results = json.load(open(run_dir / "results.json"))
  models = results["models"]
  assert list(models) == ["teacher", "ce_kd", "ce_kd_random"]
  s0 = {name: m["seeds"]["0"] for name, m in models.items()}
  assert s0["ce_kd"]["params"] == s0["ce_kd_random"]["params"] < s0["teacher"]["params"]
  assert s0["ce_kd"]["flops"] == s0["ce_kd_random"]["flops"] > 0 and s0["teacher"]["flops"] > 0
  for r in s0.values():
    assert 0.0 <= r["worst_case"] <= min(r["pgd20"], r["fgsm"], r["clean"]) <= 1.0 and r["examples"] == 12
    assert r["sanity_passed"] in (True, False)
  train = {n: json.load(open(run_dir / "seed0" / "train" / n / "train_summary.json")) for n in ("ce_kd", "ce_kd_random")}
  assert train["ce_kd"]["tutor_map_kind"] == "searched" and train["ce_kd_random"]["tutor_map_kind"] == "random"
  table = (run_dir / "results.md").read_text()
  assert "| ce_kd_random | ce_kd | random |" in table and "| teacher | PGD-AT |" in table
  # A rerun finds every stage done and only rebuilds the table.
  proc = helpers.run_cli(SCRIPT, *args, timeout=300)
  assert proc.stdout.count("skipped") == 7 and "running" not in proc.stdout
