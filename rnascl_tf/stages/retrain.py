"""The retraining stage: the searched child, trained from scratch with a fixed tutor map."""

import os
from typing import Optional

import tensorflow as tf

from rnascl_tf.models import child as child_lib
from rnascl_tf.models import cost as cost_lib
from rnascl_tf.data import datasets as data_lib
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.nas import search_space as ss
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.stages import driver as training
from rnascl_tf.runtime.checkpointing import _flat_variables
from rnascl_tf.configs import OptimConfig, RobustConfig, RunConfig
from rnascl_tf.errors import UserInputError
from rnascl_tf.configs import DistillConfig


def check_genotype_matches_data(g: dict, info: data_lib.DatasetInfo, path: str) -> None:
  """A genotype searched on another input shape or class count cannot be trained on this data."""
  if tuple(g["input_shape"]) != tuple(info.input_shape) or int(g["num_classes"]) != info.num_classes:
    raise UserInputError(
        f"genotype {path!r} was searched for inputs {tuple(g['input_shape'])} with {g['num_classes']} classes, "
        f"but --dataset={info.name} gives {tuple(info.input_shape)} with {info.num_classes} classes; "
        "use the same --dataset/--image_size as the search")


def build_child(g: dict, info: data_lib.DatasetInfo, path: str = "genotype",
                synchronized_bn: bool = False) -> child_lib.ChildNet:
  """The physically narrowed child network of a genotype (synchronized BatchNorm for --sync_bn)."""
  space = ss.space_from_dict(g["search_space"]["definition"], source=f"genotype {path!r}")
  choices = {"widths": {b["name"]: b["width"] for b in g["blocks"]},
             "expansions": {b["name"]: b.get("expansion", b.get("expansion_options", [6])[0]) for b in g["blocks"]}}
  return child_lib.build_child_from_choices(space, choices, info.input_shape, info.num_classes, info.mean,
                                            info.std, source=f"genotype {path!r}", name="student",
                                            synchronized_bn=synchronized_bn)


def warm_start_from_search(child: child_lib.ChildNet, g: dict, info, search_dir: str) -> None:
  """Copies the leading slices of the search's supernet weights into `child` (the authors' warm start)."""
  from rnascl_tf.models.supernet import Supernet  # Local: only needed for the warm start.

  latest = tf.train.latest_checkpoint(os.path.join(search_dir, "ckpt"))
  if latest is None:
    raise UserInputError(f"--warm_start_search_dir {search_dir!r} has no search checkpoint (ckpt/)")
  space = ss.space_from_dict(g["search_space"]["definition"], source="genotype")
  supernet = Supernet(space, info.input_shape, info.num_classes, info.mean, info.std)
  status = tf.train.Checkpoint(**_flat_variables({"supernet": supernet})).restore(latest)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise UserInputError(f"--warm_start_search_dir {search_dir!r}: its supernet does not match the genotype ({e})")
  child_lib.warm_start_from_supernet(child, supernet)


def retrain(run: RunConfig, data_cfg: data_lib.DataConfig, robust: RobustConfig, optim_cfg: OptimConfig,
            genotype_path: str, objective: str, use_kl: bool, use_cl: bool, tutor_map_kind: str,
            lambda_kd: float, kd_temperature: float, gamma_cl: float, cl_grid: int,
            teacher_path: Optional[str] = None, teacher_assume_pixel_input: bool = False,
            warm_start_search_dir: Optional[str] = None, test_attack_steps: int = 20,
            flag_record: Optional[dict] = None, fingerprint: Optional[dict] = None) -> dict:
  """Trains the genotype's child and writes student.keras, student_last.keras and train_summary.json.

  Args:
    run, data_cfg, robust, optim_cfg: as for the other stages (robust.mode follows the objective).
    genotype_path: the search's genotype.json.
    objective: objective name, recorded in the summary.
    use_kl, use_cl: whether the KL and cross-layer terms are on.
    tutor_map_kind: "searched" or an ablation (genotype.TUTOR_MAPS).
    lambda_kd, kd_temperature, gamma_cl, cl_grid: distillation settings.
    teacher_path: the teacher (default: the one recorded in the genotype).
    teacher_assume_pixel_input: trust an external teacher without a visible normalisation layer.
    warm_start_search_dir: optional search run folder to warm start from.
    test_attack_steps: PGD steps of the final test evaluation.
    flag_record: flags recorded in the summary.
    fingerprint: settings a resumed run must share.

  Returns:
    The summary dict (also written to train_summary.json).
  """
  g = genotype_lib.load_genotype(genotype_path)
  splits = data_lib.load_splits(data_cfg)
  info = splits.info
  check_genotype_matches_data(g, info, genotype_path)
  tmap = genotype_lib.ablation_tutor_map(g, tutor_map_kind, seed=run.seed)
  teacher_layers = [t["name"] for t in g["teacher"]["tap_layers"]]
  teacher_file = teacher_path or g["teacher"].get("path")
  distil = use_kl or use_cl
  if distil and not teacher_file:
    raise UserInputError(f"--objective={objective} needs a teacher: the genotype records none; pass --teacher_path")
  distill = DistillConfig(lambda_kd=lambda_kd if use_kl else 0.0, kd_temperature=kd_temperature,
                          gamma_cl=gamma_cl if use_cl else 0.0, cl_grid=cl_grid, tutor_map=tmap) if distil else None

  def build():
    student = build_child(g, info, genotype_path, synchronized_bn=run.sync_bn)
    taps = None
    if distil:
      _, taps = teacher_io.load_teacher(teacher_file, info.input_shape, info.num_classes, teacher_layers,
                                        assume_pixel_input=teacher_assume_pixel_input)
    return student, taps

  after_build = None
  if warm_start_search_dir:
    after_build = lambda net: warm_start_from_search(net, g, info, warm_start_search_dir)  # noqa: E731
  best_path = os.path.join(run.model_dir, "student.keras")
  out = training.fit_robust(run, splits, robust, optim_cfg, build, "train", best_path,
                            last_path=os.path.join(run.model_dir, "student_last.keras"), distill=distill,
                            fingerprint=fingerprint, test_attack_steps=test_attack_steps, after_build=after_build)
  exact = cost_lib.count_model_cost(out["net"], info.input_shape)
  summary = {
      "schema": "rnascl_tf/train_summary", "version": 1, "genotype": os.path.abspath(genotype_path),
      "dataset": info.name, "objective": objective, "adv_mode": robust.mode, "tutor_map_kind": tutor_map_kind,
      "tutor_map": [{"student": s["name"], "teacher": teacher_layers[j]} for s, j in zip(g["student_layers"], tmap)],
      "teacher": teacher_file if distil else None, "warm_start": warm_start_search_dir,
      "params": exact["params"], "flops": exact["flops"],
      "best": out["best"], "test_best": out["test_best"], "test_last": out["test_last"],
      "history": out["history"], "wall_seconds": round(out["wall_seconds"], 1), "seed": run.seed,
      "flags": flag_record or {}, "student_path": best_path,
  }
  if out["is_chief"]:  # Multi-worker: only the chief writes.
    io_utils.atomic_write_json(os.path.join(run.model_dir, "train_summary.json"), summary)
  return summary
