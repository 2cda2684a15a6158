"""The teacher-training stage: a built-in architecture trained robustly, then its manifest."""

import dataclasses
import os
from typing import Optional

from rnascl_tf import configs
from rnascl_tf.configs import DataConfig, OptimConfig, RobustConfig, RunConfig, TeacherArchConfig
from rnascl_tf.data import load_splits
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.models import teachers
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.stages import driver


def train_teacher(run: RunConfig, data_cfg: DataConfig, robust: RobustConfig, optim_cfg: OptimConfig,
                  teacher: TeacherArchConfig, flag_record: Optional[dict] = None) -> dict:
  """Trains a built-in teacher adversarially and writes teacher.keras + teacher_manifest.json.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    data_cfg: dataset settings.
    robust: adversarial-training settings (mode, eps, test PGD steps...).
    optim_cfg: optimiser settings.
    teacher: the built-in architecture and the taps to record.
    flag_record: flag values recorded in the manifest (provenance).

  Returns:
    A summary dict (paths, test metrics, best epoch, wall time).
  """
  manifest_path = os.path.join(run.model_dir, "teacher_manifest.json")
  driver.refuse_finished_with_other_settings(run, "train_teacher", manifest_path, flag_record)
  splits = load_splits(data_cfg)
  info = splits.info

  def build():
    net = teachers.build_teacher(teacher.arch, info.input_shape, info.num_classes, info.mean, info.std,
                                 synchronized_bn=run.sync_bn, **_knobs(teacher))
    return net, None

  best_path = os.path.join(run.model_dir, "teacher.keras")
  # The tap list only annotates the manifest: it may change without retraining.
  arch_print = dataclasses.replace(teacher, layers="")
  out = driver.fit_robust(run, splits, robust, optim_cfg, build, "train_teacher", best_path,
                          fingerprint=configs.fingerprint(run=run, data=data_cfg, robust=robust, optim=optim_cfg,
                                                          teacher=arch_print))
  best, test = out["net"], out["test_best"]
  taps = teacher_io.TeacherTaps(best, teacher_io.resolve_teacher_layers(best, teacher.layers))
  wall = out["wall_seconds"]
  metrics = {"test": test, "test_last_epoch": out["test_last"], "best": out["best"], "epochs": run.epochs,
             "history": out["history"], "wall_seconds_this_run": round(wall, 1)}
  manifest = teacher_io.teacher_manifest(best, teacher.arch, taps, {
      "dataset": info.name, "metrics": metrics, "flags": flag_record or {}, "seed": run.seed,
      "robust_training": {"mode": robust.mode, "eps": robust.eps, "step_size": robust.step_size,
                          "steps": robust.steps}})
  if out["is_chief"]:  # Multi-worker: only the chief writes.
    io_utils.atomic_write_json(manifest_path, manifest)
  return {"teacher_path": best_path, "manifest_path": manifest_path, "test": test, "test_attack": test["attack"],
          "best": out["best"], "wall_seconds": wall}


def _knobs(teacher: TeacherArchConfig) -> dict:
  knobs = {}
  if teacher.width != 1.0:
    knobs["width_multiplier"] = teacher.width
  if teacher.depth:
    knobs["depth"] = teacher.depth
  return knobs
