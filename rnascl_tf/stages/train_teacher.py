"""The teacher-training stage: a built-in architecture trained robustly, then its manifest."""

import os
from typing import Optional

from rnascl_tf.data import datasets as data_lib
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.models import teachers
from rnascl_tf.stages import driver as training
from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig


def train_teacher(run: RunConfig, data_cfg: data_lib.DataConfig, robust: RobustConfig, optim_cfg: OptimConfig,
                  arch: str, width: float = 1.0, depth: int = 0, layers_spec: str = "auto",
                  test_attack_steps: int = 20, flag_record: Optional[dict] = None,
                  fingerprint: Optional[dict] = None) -> dict:
  """Trains a built-in teacher adversarially and writes teacher.keras + teacher_manifest.json.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    data_cfg: dataset settings.
    robust: adversarial-training settings (mode, eps...).
    optim_cfg: optimiser settings.
    arch: built-in architecture name (teachers.TEACHER_ARCHS).
    width: width multiplier.
    depth: depth for depth-configurable architectures (0 = default).
    layers_spec: tap layers recorded in the manifest ("auto", "auto_block", names).
    test_attack_steps: PGD steps of the final test evaluation.
    flag_record: flag values recorded in the manifest.
    fingerprint: settings a resumed run must share.

  Returns:
    A summary dict (paths, test metrics, best epoch, wall time).
  """
  splits = data_lib.load_splits(data_cfg)
  info = splits.info

  def build():
    net = teachers.build_teacher(arch, info.input_shape, info.num_classes, info.mean, info.std,
                                 synchronized_bn=run.sync_bn, **_knobs(arch, width, depth))
    return net, None

  best_path = os.path.join(run.model_dir, "teacher.keras")
  out = training.fit_robust(run, splits, robust, optim_cfg, build, "train_teacher", best_path,
                            fingerprint=fingerprint or {"arch": arch, "seed": run.seed},
                            test_attack_steps=test_attack_steps)
  best, test = out["net"], out["test_best"]
  taps = teacher_io.TeacherTaps(best, teacher_io.resolve_teacher_layers(best, layers_spec))
  wall = out["wall_seconds"]
  metrics = {"test": test, "test_last_epoch": out["test_last"], "best": out["best"], "epochs": run.epochs,
             "history": out["history"], "wall_seconds_this_run": round(wall, 1)}
  manifest = teacher_io.teacher_manifest(best, arch, taps, {
      "dataset": info.name, "metrics": metrics, "flags": flag_record or {}, "seed": run.seed,
      "robust_training": {"mode": robust.mode, "eps": robust.eps, "step_size": robust.step_size,
                          "steps": robust.steps}})
  manifest_path = os.path.join(run.model_dir, "teacher_manifest.json")
  if out["is_chief"]:  # Multi-worker: only the chief writes.
    io_utils.atomic_write_json(manifest_path, manifest)
  return {"teacher_path": best_path, "manifest_path": manifest_path, "test": test, "test_attack": test["attack"],
          "best": out["best"], "wall_seconds": wall}


def _knobs(arch: str, width: float, depth: int) -> dict:
  knobs = {}
  if width != 1.0:
    knobs["width_multiplier"] = width
  if depth:
    knobs["depth"] = depth
  return knobs
