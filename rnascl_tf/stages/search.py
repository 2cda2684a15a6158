"""The search stage: teacher taps, supernet, the bilevel fit (one driver), genotype and figures."""

import dataclasses
import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from rnascl_tf import configs
from rnascl_tf.configs import DataConfig, OptimConfig, RunConfig, SearchConfig, TeacherConfig
from rnascl_tf.data import load_splits
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.errors import UserInputError
from rnascl_tf.evaluation import plots
from rnascl_tf.models import child as child_lib
from rnascl_tf.models import cost as cost_lib
from rnascl_tf.models.supernet import Supernet
from rnascl_tf.nas import genotype as genotype_lib
from rnascl_tf.nas import search_space as ss
from rnascl_tf.nas.search_model import SearchModel, TemperatureSchedule, WeightOnlyWarmup
from rnascl_tf.stages import driver


# The search curves, one panel per unit.
SEARCH_PANELS = (("architecture entropies", ("width_entropy", "tutor_entropy"), "entropy (nats)"),
                 ("Gumbel-softmax temperature", ("temperature",), "temperature"),
                 ("expected cost of the sampled child", ("exp_mflops",), "MFLOPs"))


def _teacher_manifest_for(path: str, model, taps, dataset: str) -> dict:
  """The teacher's manifest: the one beside the teacher file if valid, else one made now."""
  beside = os.path.join(os.path.dirname(os.path.abspath(path)), "teacher_manifest.json")
  base = teacher_io.read_teacher_manifest(beside) if os.path.exists(beside) else {}
  made = teacher_io.teacher_manifest(model, base.get("arch", "external"), taps, {"dataset": dataset})
  # The tap list is the one this search uses (it may differ from the one recorded at training time).
  return {**base, "path": os.path.abspath(path), "tap_layers": made["tap_layers"]}


def run_search(run: RunConfig, data_cfg: DataConfig, optim_cfg: OptimConfig, cfg: SearchConfig,
               teacher: TeacherConfig, flag_record: Optional[dict] = None) -> dict:
  """Runs the RNAS-CL search and writes genotype.json, tutor_heatmap.png, widths.png, search_curves.png.

  Args:
    run: run control (model_dir, epochs, seed, strategy...).
    data_cfg: dataset settings (the weight and architecture splits come from it).
    optim_cfg: weight optimiser settings.
    cfg: the search space, objective, temperature schedule and architecture optimiser.
    teacher: the teacher .keras file and its taps.
    flag_record: flags recorded in the genotype (provenance).

  Returns:
    A summary dict (paths, genotype summary, wall time, the trained `model`, and `is_chief`: only
    the chief writes files under multi-worker).
  """
  if not teacher.path:
    raise UserInputError("--teacher_path is required: the teacher .keras file (e.g. from "
                         "python -m rnascl_tf.train_teacher)")
  genotype_path = os.path.join(run.model_dir, "genotype.json")
  driver.refuse_finished_with_other_settings(run, "search", genotype_path, flag_record)
  session = driver.Session(run, data_cfg.batch_size)
  splits = load_splits(data_cfg)
  info = splits.info
  space = dataclasses.replace(ss.resolve_space(cfg.space), student_layers=cfg.student_layers)
  steps_per_epoch = run.steps_per_epoch or splits.steps_per_epoch("weight")
  with session.scope():  # The run's precision for the teacher, the supernet and both optimisers.
    teacher_model, taps = teacher_io.load_teacher(teacher.path, info.input_shape, info.num_classes, teacher.layers,
                                                  assume_pixel_input=teacher.assume_pixel_input)
    supernet = Supernet(space, info.input_shape, info.num_classes, info.mean, info.std, seed=run.seed,
                        synchronized_bn=run.sync_bn, initial_temperature=cfg.tau0)
    supernet(np.zeros((1,) + tuple(info.input_shape), "float32"))
    arch_opt = session.loss_scaled(keras.optimizers.Adam(cfg.arch_learning_rate,
                                                         weight_decay=cfg.arch_weight_decay or None))
    model = SearchModel(supernet, taps, cfg, arch_opt, seed=run.seed)
    w_opt = session.optimizer(optim_cfg, steps_per_epoch)
    w_opt.build(model.weight_variables())  # Pre-built, each on its own variables (docs/keras_notes.md notes 2-3).
    arch_opt.build(model.arch_variables())
    model.compile(optimizer=w_opt, jit_compile=run.jit_compile)
  manifest = _teacher_manifest_for(teacher.path, teacher_model, taps, info.name)

  def logs():  # What train_step logs: no architecture terms during the weight-only warm-up.
    skip = () if model.update_arch else ("arch_loss", "resource_factor")
    return {m.name: m.result() for m in model.metrics if m.name not in skip}

  def make_callbacks(state):
    return [TemperatureSchedule(supernet.temperature, cfg, run.epochs), WeightOnlyWarmup(cfg.weight_only_epochs)], None

  ckpt = session.fit(
      model, "search", configs.fingerprint(run=run, data=data_cfg, optim=optim_cfg, search=cfg, teacher=teacher),
      {"supernet": supernet, "tutor_logits": model.tutor_logits, "weight_optimizer": w_opt,
       "arch_optimizer": arch_opt, "supernet_seed": supernet.seed_generator.state,
       "tutor_seed": model.tutor_seed.state},
      lambda skip: splits.search_dataset(rotating=cfg.arch_split == "rotating", skip_batches=skip),
      steps_per_epoch, make_callbacks, logs_fn=logs)

  genotype = derive_genotype(supernet, model, space, info, manifest, run.seed, flag_record or {})
  history = ckpt.state.get("history", [])
  if session.chief:
    genotype_lib.save_genotype(genotype_path, genotype)
    _write_figures(run.model_dir, genotype, model, history, run.epochs)
  return {"genotype_path": genotype_path, "genotype": genotype, "history": history,
          "wall_seconds": session.seconds(), "model": model, "is_chief": session.chief}


def derive_genotype(supernet, model, space, info, manifest: dict, seed: int, flag_record: dict) -> dict:
  """Argmax widths and tutors, with their distributions and the exact cost of the derived child."""
  derived = supernet.derive()
  tutor_probs = model.tutor_probabilities().numpy()
  teacher_names = [l["name"] for l in manifest["tap_layers"]]
  child = child_lib.build_child_from_choices(space, derived, info.input_shape, info.num_classes, info.mean, info.std)
  exact = cost_lib.count_model_cost(child, info.input_shape)
  expected = {k: float(v) for k, v in supernet.expected_cost(*supernet.arch_weights("argmax")).items()}
  maximum = cost_lib.max_width_cost(space, info.input_shape, info.num_classes)
  blocks = [{"name": spec.name, "width": derived["widths"][spec.name], "width_options": list(spec.width_options),
             "width_probs": derived["width_probs"][spec.name], "expansion": derived["expansions"][spec.name],
             "expansion_options": list(spec.expansions), "expansion_probs": derived["expansion_probs"][spec.name]}
            for spec in supernet.specs]
  return {
      "schema": genotype_lib.SCHEMA, "version": genotype_lib.VERSION,
      "search_space": {"name": space.name, "definition": ss.space_to_dict(space)},
      "input_shape": list(info.input_shape), "num_classes": info.num_classes, "dataset": info.name,
      "normalization": {"mean": list(info.mean), "std": list(info.std)},
      "blocks": blocks,
      "student_layers": [{"name": n, "tutor": teacher_names[int(np.argmax(p))], "tutor_probs": [float(x) for x in p]}
                         for n, p in zip(supernet.student_layer_names, tutor_probs)],
      "teacher": manifest,
      "cost": {"exact_child": exact, "expected_one_hot": expected, "max_width": maximum},
      "seed": seed, "flags": flag_record,
  }


def _write_figures(model_dir: str, genotype: dict, model, history, step: int) -> None:
  writer = tf.summary.create_file_writer(os.path.join(model_dir, "tb", "figures"))
  probs = np.array([s["tutor_probs"] for s in genotype["student_layers"]])
  teacher_names = [l["name"] for l in genotype["teacher"]["tap_layers"]]
  student_names = [s["name"] for s in genotype["student_layers"]]
  plots.write_png(os.path.join(model_dir, "tutor_heatmap.png"),
                  plots.tutor_heatmap_png(probs, student_names, teacher_names), writer, "tutor_heatmap", step)
  blocks = genotype["blocks"]
  plots.write_png(os.path.join(model_dir, "widths.png"),
                  plots.widths_png([b["name"] for b in blocks], [b["width"] for b in blocks],
                                   [b["width_options"][0] for b in blocks]), writer, "widths", step)
  if history:
    plots.write_png(os.path.join(model_dir, "search_curves.png"), plots.panels_png(history, SEARCH_PANELS, "Search"),
                    writer, "search_curves", step)


def summarise(out: dict) -> str:
  """A short human summary of a finished search: widths, tutor map, cost vs maximum, entropies."""
  g = out["genotype"]
  widths = " ".join(f"{b['width']}/{b['width_options'][0]}" for b in g["blocks"])
  tutors = ", ".join(f"{s['name']}->{s['tutor']}" for s in g["student_layers"])
  lines = [f"genotype: {out['genotype_path']}",
           f"widths (chosen/max): {widths}",
           f"saved by the search: {genotype_lib.cost_savings(g)}",
           f"tutor map: {tutors}"]
  if out["history"]:
    ent = " ".join(f"{h['tutor_entropy']:.3f}" for h in out["history"] if "tutor_entropy" in h)
    lines.append(f"tutor entropy per epoch: {ent}")
  lines.append(f"wall time: {out['wall_seconds']:.0f} s")
  return "\n".join(lines)
