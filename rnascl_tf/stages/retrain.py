"""The retraining stage: the searched child, trained from scratch with a fixed tutor map."""

import dataclasses
import os
from typing import Optional, Tuple

import keras
import tensorflow as tf

from rnascl_tf import configs
from rnascl_tf.configs import (DataConfig, DistillConfig, OptimConfig, RetrainConfig, RobustConfig, RunConfig,
                               TeacherConfig)
from rnascl_tf.data import DatasetInfo, load_splits
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.errors import UserInputError
from rnascl_tf.models import child as child_lib
from rnascl_tf.models import cost as cost_lib
from rnascl_tf.models import reference_nets
from rnascl_tf.nas import baselines
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.nas import search_space as ss
from rnascl_tf.robust import objectives
from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.runtime.checkpointing import flat_variables
from rnascl_tf.stages import driver


def check_genotype_matches_data(g: dict, info: DatasetInfo, path: str) -> None:
  """A genotype searched on another input shape or class count cannot be trained on this data."""
  if tuple(g["input_shape"]) != tuple(info.input_shape) or int(g["num_classes"]) != info.num_classes:
    raise UserInputError(
        f"genotype {path!r} was searched for inputs {tuple(g['input_shape'])} with {g['num_classes']} classes, "
        f"but --dataset={info.name} gives {tuple(info.input_shape)} with {info.num_classes} classes; "
        "use the same --dataset/--image_size as the search")


def build_child(g: dict, info: DatasetInfo, path: str = "genotype",
                synchronized_bn: bool = False) -> child_lib.ChildNet:
  """The physically narrowed child network of a genotype (synchronized BatchNorm for --sync_bn)."""
  space = ss.space_from_dict(g["search_space"]["definition"], source=f"genotype {path!r}")
  choices = {"widths": {b["name"]: b["width"] for b in g["blocks"]},
             "expansions": {b["name"]: b.get("expansion", b.get("expansion_options", [6])[0]) for b in g["blocks"]}}
  return child_lib.build_child_from_choices(space, choices, info.input_shape, info.num_classes, info.mean,
                                            info.std, source=f"genotype {path!r}", name="student",
                                            synchronized_bn=synchronized_bn)


def build_student(g: dict, info: DatasetInfo, cfg: RetrainConfig, path: str = "genotype",
                  synchronized_bn: bool = False) -> Tuple[keras.Model, dict]:
  """The network `cfg.architecture` names, and how it was chosen.

  "searched" is the genotype's child; "uniform" and "random" are children of the genotype's space
  and "resnet20" the CIFAR ResNet-20 topology at a scaled width, each within 3% of the target FLOPs
  (`cfg.arch_target_mflops`, or the searched child's).

  Returns:
    (network, {"kind", "flops", "params", ...}: the baseline's record; the searched child's costs).
  """
  child = build_child(g, info, path, synchronized_bn=synchronized_bn)
  searched = cost_lib.count_model_cost(child, info.input_shape)
  if cfg.architecture == "searched":
    return child, {"kind": "searched", **searched}
  target = cfg.arch_target_mflops * 1e6 or searched["flops"]
  source = "--arch_target_mflops" if cfg.arch_target_mflops else f"the searched child's FLOPs ({path})"
  if cfg.architecture == "resnet20":
    return reference_nets.resnet20_at_flops(info.input_shape, info.num_classes, info.mean, info.std, target,
                                            source=source, synchronized_bn=synchronized_bn)
  space = ss.space_from_dict(g["search_space"]["definition"], source=f"genotype {path!r}")
  choices = baselines.baseline_choices(cfg.architecture, space, info.input_shape, info.num_classes, target,
                                       seed=cfg.arch_seed, source=source)
  net = child_lib.build_child_from_choices(space, choices, info.input_shape, info.num_classes, info.mean, info.std,
                                           source=f"{cfg.architecture} child", name="student",
                                           synchronized_bn=synchronized_bn)
  record = dict(choices["baseline"])
  record["description"] = baselines.describe_choices(space, choices, record)
  record["widths"] = choices["widths"]
  return net, record


def warm_start_from_search(child: child_lib.ChildNet, g: dict, info, search_dir: str) -> None:
  """Copies the leading slices of the search's supernet weights into `child` (the authors' warm start)."""
  from rnascl_tf.models.supernet import Supernet  # Local: only needed for the warm start.

  latest = tf.train.latest_checkpoint(os.path.join(search_dir, "ckpt"))
  if latest is None:
    raise UserInputError(f"--warm_start_search_dir {search_dir!r} has no search checkpoint (ckpt/)")
  space = ss.space_from_dict(g["search_space"]["definition"], source="genotype")
  supernet = Supernet(space, info.input_shape, info.num_classes, info.mean, info.std)
  status = tf.train.Checkpoint(**flat_variables({"supernet": supernet})).restore(latest)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise UserInputError(f"--warm_start_search_dir {search_dir!r}: its supernet does not match the genotype ({e})")
  child_lib.warm_start_from_supernet(child, supernet)


def teacher_source(g: dict, teacher: TeacherConfig, path: str, objective: str) -> Optional[str]:
  """Checks, before any work, the teacher a distilling objective needs; returns how messages name it.

  Args:
    g: the genotype.
    teacher: the teacher config (its path, from --teacher_path, wins over the genotype's record).
    path: the genotype file, for messages.
    objective: the --objective that needs the teacher, for messages.

  Returns:
    None for --teacher_path (`load_teacher`'s default naming); for the path the genotype records,
    a name that says so and how to override it.
  """
  if teacher.path:
    return None
  recorded = g["teacher"].get("path")
  if not recorded:
    raise UserInputError(f"--objective={objective} needs a teacher: genotype {path!r} records none; "
                         "pass --teacher_path")
  source = f"teacher recorded in genotype {path!r}"
  if not os.path.isfile(recorded):
    why = "is a directory, not a .keras file" if os.path.isdir(recorded) else "does not exist (moved or deleted?)"
    raise UserInputError(f"{source}: {recorded!r} {why}; pass --teacher_path=<teacher .keras> to use a teacher "
                         "file at another place")
  return f"{source} (--teacher_path overrides it)"


def retrain(run: RunConfig, data_cfg: DataConfig, robust: RobustConfig, optim_cfg: OptimConfig,
            retrain_cfg: RetrainConfig, distill: DistillConfig, teacher: TeacherConfig,
            flag_record: Optional[dict] = None) -> dict:
  """Trains the genotype's child and writes student.keras, student_last.keras and train_summary.json.

  Args:
    run, data_cfg, optim_cfg: as for the other stages.
    robust: adversarial-training settings; its mode is replaced by the objective's.
    retrain_cfg: the genotype, the objective, the tutor map and the optional warm start.
    distill: distillation weights; the terms the objective does not use are switched off.
    teacher: the teacher (path None: the one recorded in the genotype).
    flag_record: flags recorded in the summary (provenance).

  Returns:
    The summary dict (also written to train_summary.json).
  """
  genotype_path = retrain_cfg.genotype
  driver.refuse_finished_with_other_settings(run, "train", os.path.join(run.model_dir, "train_summary.json"),
                                             flag_record)
  robust = dataclasses.replace(robust, mode=retrain_cfg.adv_mode)
  distill = retrain_cfg.distill_for_objective(distill)
  g = genotype_lib.load_genotype(genotype_path)
  distil = retrain_cfg.needs_teacher(distill)
  teacher_file = teacher.path or g["teacher"].get("path")
  source = teacher_source(g, teacher, genotype_path, retrain_cfg.objective) if distil else None
  splits = load_splits(data_cfg)
  info = splits.info
  check_genotype_matches_data(g, info, genotype_path)
  # Built once here (cheap) to size the tutor map and record the architecture before any training.
  probe, arch = build_student(g, info, retrain_cfg, genotype_path)
  student_layers = None
  if retrain_cfg.architecture == "resnet20":
    student_layers = list(probe.student_layer_names)
    if distill.gamma_cl > 0 and retrain_cfg.tutor_map == "searched":
      raise UserInputError("--architecture=resnet20 has no searched tutor map (the search mapped the child's "
                           "layers); with --gamma_cl > 0 use --tutor_map=same_depth, random or last_layer")
  del probe
  # Without the cross-layer term the map is unused; a ResNet-20 then records the proportional one.
  map_kind = "same_depth" if student_layers and retrain_cfg.tutor_map == "searched" else retrain_cfg.tutor_map
  tmap = genotype_lib.ablation_tutor_map(g, map_kind, seed=run.seed,
                                         n_student=len(student_layers) if student_layers else None)
  teacher_layers = [t["name"] for t in g["teacher"]["tap_layers"]]
  distill = dataclasses.replace(distill, tutor_map=tuple(tmap)) if distil else None

  def build():
    student = build_student(g, info, retrain_cfg, genotype_path, synchronized_bn=run.sync_bn)[0]
    taps = None
    if distil:
      _, taps = teacher_io.load_teacher(teacher_file, info.input_shape, info.num_classes, teacher_layers,
                                        assume_pixel_input=teacher.assume_pixel_input, source=source)
    return student, taps

  after_build = None
  if retrain_cfg.warm_start_search_dir:
    after_build = lambda net: warm_start_from_search(net, g, info, retrain_cfg.warm_start_search_dir)  # noqa: E731
  best_path = os.path.join(run.model_dir, "student.keras")
  fingerprint = configs.fingerprint(run=run, data=data_cfg, robust=robust, optim=optim_cfg, retrain=retrain_cfg,
                                    distill=distill, teacher=dataclasses.replace(teacher, path=teacher_file))
  spec = retrain_cfg.spec
  weights = objectives.Weights(trades_beta=robust.trades_beta, ard_alpha=retrain_cfg.ard_alpha,
                               ard_temperature=retrain_cfg.ard_temperature,
                               rslad_adv_weight=retrain_cfg.rslad_adv_weight, adaad_alpha=retrain_cfg.adaad_alpha)
  out = driver.fit_robust(run, splits, robust, optim_cfg, build, "train", best_path, fingerprint,
                          last_path=os.path.join(run.model_dir, "student_last.keras"), distill=distill,
                          after_build=after_build, objective=spec.loss, weights=weights)
  exact = cost_lib.count_model_cost(out["net"], info.input_shape)
  summary = {
      "schema": "rnascl_tf/train_summary", "version": 1, "genotype": os.path.abspath(genotype_path),
      "dataset": info.name, "objective": retrain_cfg.objective, "adv_mode": robust.mode,
      "base_loss": spec.loss, "loss_weights": dataclasses.asdict(weights),
      "distill_terms": {"lambda_kd": distill.lambda_kd if distill else 0.0,
                        "gamma_cl": distill.gamma_cl if distill else 0.0},
      "tutor_map_kind": map_kind,
      "tutor_map": [{"student": s, "teacher": teacher_layers[j]}
                    for s, j in zip(student_layers or [s["name"] for s in g["student_layers"]], tmap)],
      "architecture": arch,
      "teacher": teacher_file if distil else None, "warm_start": retrain_cfg.warm_start_search_dir,
      "params": exact["params"], "flops": exact["flops"],
      "best": out["best"], "test_best": out["test_best"], "test_last": out["test_last"],
      "history": out["history"], "wall_seconds": round(out["wall_seconds"], 1), "seed": run.seed,
      "flags": flag_record or {}, "student_path": best_path,
  }
  if out["is_chief"]:  # Multi-worker: only the chief writes.
    io_utils.atomic_write_json(os.path.join(run.model_dir, "train_summary.json"), summary)
  return summary
