"""Smoke tests of the benchmark scripts (scripts/bench_*.py).

Each script runs with --tiny (tiny space, 16x16 inputs, batch 4, one round) and must write its JSON
with the common keys and its own result keys. The numbers are meaningless at that size and are not
checked. The timing scripts run in this process through their `main(argv)` (a fresh interpreter
would spend most of the budget importing TensorFlow); the memory script must start its workers as
fresh processes, so its test runs two of them.
"""

import importlib
import json
import math
import os
import sys

import pytest

import helpers

SCRIPTS = os.path.join(helpers.REPO, "scripts")
COMMON_KEYS = ("schema", "version", "benchmark", "created_utc", "command", "tiny", "machine_shared", "note",
               "settings", "device", "method", "results", "targets", "all_targets_met", "wall_seconds")
DEVICE_KEYS = ("cpu_model", "logical_cores", "usable_cores", "load_average_1_5_15", "gpus", "accelerator",
               "tensorflow", "keras", "python", "load_average_at_end")


def _script(name):
  if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)
  return importlib.import_module(name)


def _run(name, tmp_path, *extra):
  out = str(tmp_path / f"{name}.json")
  payload = _script(name).main(["--tiny", f"--out={out}", "--machine_shared", "--note=smoke test", *extra])
  with open(out, encoding="utf-8") as f:
    data = json.load(f)
  assert data == json.loads(json.dumps(payload))  # The returned payload is what was written.
  for key in COMMON_KEYS:
    assert key in data, key
  for key in DEVICE_KEYS:
    assert key in data["device"], key
  assert data["tiny"] is True and data["machine_shared"] is True and data["note"] == "smoke test"
  assert data["targets"], "every benchmark states at least one target"
  for t in data["targets"].values():
    assert set(t) >= {"value", "comparison", "limit", "met"}
    assert isinstance(t["met"], bool)
  assert data["all_targets_met"] == all(t["met"] for t in data["targets"].values())
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".")], "temp files left behind"
  return data


def _timing(entry):
  assert set(entry) >= {"median_s", "min_s", "max_s", "repeats", "samples_s"}
  assert entry["median_s"] > 0 and len(entry["samples_s"]) == entry["repeats"]


def test_bench_search_step(tmp_path):
  data = _run("bench_search_step", tmp_path, "--without_cl")
  r = data["results"]
  for key in ("search_step", "plain_step", "teacher_inference_both_batches", "search_step_without_cl"):
    _timing(r[key])
  assert r["overhead_ratio_without_cl"]["median_of_round_ratios"] > 0
  assert set(r["overhead_ratio"]) >= {"median_of_round_ratios", "ratio_of_medians"}
  assert r["images_per_second"] > 0 and r["student_layers"] == 10 and r["teacher_layers"] == 7
  assert set(data["targets"]) == {"search_step_overhead"}
  assert data["settings"]["space"] == "tiny" and data["settings"]["batch_size"] == 4


def test_bench_cl_loss(tmp_path):
  data = _run("bench_cl_loss", tmp_path)
  (config,) = data["results"]["configs"]
  assert (config["space"], config["teacher"]) == ("tiny", "wide_resnet")
  assert (config["student_layers"], config["teacher_layers"]) == (10, 7)  # WRN-10: 1 + 2 x 3 conv taps.
  _timing(config["search_step"])
  _timing(config["cl_isolated"])
  assert config["cl_fraction"]["median_of_round_ratios"] > 0
  _timing(config["ablation"]["search_step_without_cl"])
  full = config["full_width_taps"]
  assert full["widen_factor"] == 2 and full["estimated_full_width_step_s"] > 0
  (teacher,) = data["results"]["teachers"]
  _timing(teacher["teacher_inference_both_batches"])
  assert teacher["full_width"]["teacher"]["knobs"] == {"depth": 10, "widen_factor": 2}
  assert set(data["targets"]) == {"cl_fraction/tiny:wide_resnet"}


def test_cross_layer_loss_removed_restores_the_module():
  from rnascl_tf.distill import losses
  saved = losses.layer_distances_from_energies, losses.cross_layer_loss
  with pytest.raises(RuntimeError):
    with _script("bench_cl_loss").cross_layer_loss_removed():
      assert losses.layer_distances_from_energies is not saved[0]
      raise RuntimeError("boom")
  assert (losses.layer_distances_from_energies, losses.cross_layer_loss) == saved


def test_bench_attack(tmp_path):
  data = _run("bench_attack", tmp_path)
  r = data["results"]
  for key in ("pgd", "fwd_bwd", "forward", "evaluate"):
    _timing(r[key])
  assert r["attack_ratio"]["median_of_round_ratios"] > 0 and r["evaluate_ratio_median_of_rounds"] > 0
  assert r["attack_label"].startswith("PGD-3 ")
  assert set(data["targets"]) == {"pgd_attack_ratio"}


def test_bench_input(tmp_path):
  data = _run("bench_input", tmp_path)
  sources = data["results"]["sources"]
  assert set(sources) == {"image_folder", "tfds"}  # --tiny generates its image folder.
  for entry in sources.values():
    for pipeline in ("train_full", "search"):
      for variant in ("batch", "image"):
        for threads in (1, 2):
          timing = entry[f"{pipeline}/{variant}/t{threads}"]
          _timing(timing)
          per_element = 16 if pipeline == "search" else 8  # A search element is two batches of 8.
          assert timing["images_timed"] == 3 * per_element
          assert timing["images_per_second_per_thread"] == pytest.approx(timing["images_per_second"] / threads)
          assert timing["images_per_cpu_second"] > 0
      assert entry[f"batch_vs_image/{pipeline}/t1"]["median_of_round_ratios"] > 0
      assert entry[f"scaling/{pipeline}/batch/t1_to_t2"] > 0
  cores = data["results"]["cores_to_feed_gpu_step"]
  assert cores["assumed_gpu_images_per_second"] == 5000.0
  assert cores["cores"]["tfds"] == pytest.approx(5000.0 / cores["search_images_per_cpu_second"]["tfds"])
  assert set(data["targets"]) == {"batch_vs_image_cpu_time/image_folder", "batch_vs_image_cpu_time/tfds",
                                  "cores_to_feed_gpu_step"}
  assert data["settings"]["threads"] == [1, 2] and data["settings"]["commit"]
  missing = _script("bench_input").parse_args([f"--image_folder={tmp_path / 'absent.tar.gz'}"])
  root, reason = _script("bench_input").image_folder_root(missing, str(tmp_path))
  assert root is None and "absent.tar.gz not found" in reason  # Skipped with a reason, not an error.


@pytest.mark.slow  # Four fresh worker processes (each imports TensorFlow): ~30 s on 2 idle cores.
def test_bench_memory(tmp_path):
  data = _run("bench_memory", tmp_path)
  workers = data["results"]["workers"]
  assert set(workers) == {"plain/jit_off", "search/jit_off", "plain/jit_off/bfc_allocator",
                          "search/jit_off/bfc_allocator"}
  for key, w in workers.items():
    assert w[w["measure"]] > 0
    assert len(w["maxrss_after_step_mb"]) == 2
    assert w["cpu_allocator"] == ("bfc" if key.endswith("bfc_allocator") else "default")
    # The high-water mark is reset after the first step (Linux): the later steps' own peak is at
    # most the whole run's, which still includes the first call's.
    assert w["maxrss_after_step_mb"][1] >= w["maxrss_after_step_mb"][0]
    assert w["steady_peak_delta_mb"] <= w["peak_delta_mb"] + 1e-6
  assert workers["search/jit_off/bfc_allocator"]["tensor_peak_delta_mb"] > 0
  ratios = data["results"]["ratios"]
  assert ratios["search_vs_plain/jit_off"] > 0 and ratios["search_vs_plain_tensor_peak/jit_off"] > 0
  assert math.isfinite(ratios["search_vs_plain_steady_peak/jit_off"])
  assert set(data["targets"]) == {"search_vs_plain_peak_memory/jit_off", "search_vs_plain_tensor_peak/jit_off"}


@pytest.mark.slow  # Four fresh workers compiling with XLA: ~50 s on 2 cores.
def test_bench_memory_jit_on_reads_the_xla_buffer_assignment(tmp_path):
  data = _run("bench_memory", tmp_path, "--jit_modes=on", "--bfc_modes=none")
  workers = data["results"]["workers"]
  assert set(workers) == {"plain/jit_on", "search/jit_on", "plain/jit_on/xla_buffers", "search/jit_on/xla_buffers"}
  for kind in ("plain", "search"):
    w = workers[f"{kind}/jit_on/xla_buffers"]
    # The compiled program holds at least its temporaries and the step's variables and data.
    assert 0 < w["xla_temp_mb"] < w["xla_program_mb"]
    assert f"_{kind}_step_" in w["xla_buffer_assignment_file"]
    assert len(w["maxrss_after_step_mb"]) == 1  # One call compiles it; the plan is known then.
  ratios = data["results"]["ratios"]
  assert ratios["search_vs_plain_xla_program/jit_on"] == pytest.approx(
      workers["search/jit_on/xla_buffers"]["xla_program_mb"] / workers["plain/jit_on/xla_buffers"]["xla_program_mb"])
  assert set(data["targets"]) == {"search_vs_plain_peak_memory/jit_on", "search_vs_plain_xla_program/jit_on"}
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".xla_dump_")]  # The dumps are removed.


@pytest.mark.slow  # A fresh process (its two logical CPUs are set before TF starts): ~45 s of CPU on 2 cores.
def test_gpu_check_dry_run(tmp_path):
  out = str(tmp_path / "gpu_check.json")
  helpers.run_cli("scripts/gpu_check.py", "--dry_run", f"--out={out}", "--machine_shared", "--note=smoke test",
                  timeout=1200)  # Exit status 0: every agreement check passed.
  with open(out, encoding="utf-8") as f:
    data = json.load(f)
  for key in COMMON_KEYS:
    assert key in data, key
  for key in DEVICE_KEYS:
    assert key in data["device"], key
  assert data["command"].startswith("python scripts/gpu_check.py --dry_run") and data["tiny"] is True
  r = data["results"]
  devices = r["devices"]
  assert devices["kind"] == "CPU" and len(devices["replicas"]) == 2
  assert set(devices["build_info"]) >= {"cuda_version", "cudnn_version"}
  # One device vs mirrored over the two logical CPUs, for the search and the retraining step.
  assert set(r["agreement"]["checks"]) == {"search/mirrored_vs_one_device", "retrain/mirrored_vs_one_device"}
  for kind in ("search", "retrain"):
    assert r["agreement"]["runs"][f"{kind}/mirrored/xla_on"]["status"] == "skipped"  # XLA needs real devices.
    assert data["targets"][f"agreement/{kind}/mirrored_vs_one_device"]["met"]
  assert data["targets"]["agreement_runs_failed"]["value"] == 0
  rows = r["throughput"]
  assert set(rows) == {"teacher_pgd_at/resnet18", "teacher_pgd_at/wrn34_10", "search/s7+resnet18",
                       "search/s7+wrn34_10", "retrain/trades_kd", "retrain/adaad", "eval/pgd20"}
  for name, row in rows.items():
    assert set(row) == {f"{p}/xla_{x}" for p in ("float32", "bf16", "fp16") for x in ("off", "on")}
    assert "not run on CPU" in row["fp16/xla_off"]["reason"] and row["fp16/xla_on"]["status"] == "skipped"
    if not name.endswith("wrn34_10"):
      assert row["float32/xla_off"]["status"] == "ok" and row["float32/xla_off"]["images_per_second"] > 0, name
  assert rows["teacher_pgd_at/resnet18"]["bf16/xla_off"]["images_per_second"] > 0
  # The dry run's one-block space (its cost is tracing), in the agreement fits and the throughput rows alike.
  assert rows["search/s7+resnet18"]["float32/xla_off"]["model"]["space"] == "dry_one_block"
  assert rows["eval/pgd20"]["float32/xla_off"]["model"]["model"] == "child:dry_one_block at maximum widths"
  assert json.loads(data["settings"]["agree_space"])["name"] == "dry_one_block"
  assert "not run on CPU" in data["settings"]["fp16"]
  assert r["search_overhead"]["xla_off"]["overhead_ratio"] > 0
