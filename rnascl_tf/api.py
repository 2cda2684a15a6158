"""The stages as Python calls, for notebooks and scripts: configs in, artefacts and summaries out.

Each function is what the matching entry point runs after parsing its flags, with the same files
written into `run.model_dir` (and the same resume after a kill). Configs come from
`rnascl_tf.configs`; every argument after `run` has a default, so a call names only what differs.

A complete tiny run on the embedded `digits` dataset (about a minute on 2 CPU cores):

>>> import os, tempfile
>>> from rnascl_tf import api
>>> from rnascl_tf.configs import (DataConfig, OptimConfig, RetrainConfig, RobustConfig, RunConfig,
...                                SearchConfig, TeacherArchConfig, TeacherConfig)
>>> root = tempfile.mkdtemp()
>>> data = DataConfig(dataset="digits", image_size=8, batch_size=32, max_train_examples=256,
...                   max_test_examples=32)
>>> quick = RobustConfig(mode="pgd", eps=0.1, step_size=0.05, steps=1, val_attack_steps=1, val_examples=32,
...                      test_attack_steps=1)
>>> teacher = api.train_teacher(RunConfig(os.path.join(root, "teacher"), epochs=1, steps_per_epoch=2, verbose=0),
...                             data, quick, teacher=TeacherArchConfig(width=0.25))
>>> searched = api.search(RunConfig(os.path.join(root, "search"), epochs=1, steps_per_epoch=2, verbose=0), data,
...                       teacher=TeacherConfig(path=teacher["teacher_path"]))
>>> student = api.retrain(RunConfig(os.path.join(root, "retrain"), epochs=1, steps_per_epoch=2, verbose=0), data,
...                       RetrainConfig(genotype=searched["genotype_path"], objective="trades_kd"), robust=quick)
>>> student["params"] < 100_000 and 0.0 <= student["test_best"]["pgd"] <= student["test_best"]["clean"] <= 1.0
True
"""

from typing import Optional

from rnascl_tf.configs import (DataConfig, DistillConfig, EvalConfig, OptimConfig, RetrainConfig, RobustConfig,
                               RunConfig, SearchConfig, TeacherArchConfig, TeacherConfig)

# The entry points' default optimisers: SGD for the teacher and the retraining, Adam for the search.
TRAIN_OPTIM = OptimConfig(optimizer="sgd", learning_rate=0.1, weight_decay=5e-4)
SEARCH_OPTIM = OptimConfig(optimizer="adam", learning_rate=0.004, weight_decay=2e-4)


def train_teacher(run: RunConfig, data: DataConfig = DataConfig(), robust: RobustConfig = RobustConfig(),
                  optim: OptimConfig = TRAIN_OPTIM, teacher: TeacherArchConfig = TeacherArchConfig()) -> dict:
  """Trains a robust built-in teacher (`python -m rnascl_tf.train_teacher`).

  Returns:
    {"teacher_path", "manifest_path", "test" (clean / PGD accuracy), "best", "wall_seconds", ...}.
  """
  from rnascl_tf.stages import train_teacher as stage
  return stage.train_teacher(run, data, robust, optim, teacher)


def search(run: RunConfig, data: DataConfig = DataConfig(), config: SearchConfig = SearchConfig(),
           teacher: TeacherConfig = TeacherConfig(), optim: OptimConfig = SEARCH_OPTIM) -> dict:
  """Searches widths and tutors against a teacher (`python -m rnascl_tf.search`).

  Returns:
    {"genotype_path", "genotype", "history", "wall_seconds", "model", "is_chief"}.
  """
  from rnascl_tf.stages import search as stage
  return stage.run_search(run, data, optim, config, teacher)


def retrain(run: RunConfig, data: DataConfig, config: RetrainConfig, robust: RobustConfig = RobustConfig(),
            distill: DistillConfig = DistillConfig(), teacher: TeacherConfig = TeacherConfig(),
            optim: OptimConfig = TRAIN_OPTIM) -> dict:
  """Retrains the genotype's child with distillation (`python -m rnascl_tf.retrain`).

  `robust.mode` is replaced by the objective's; the teacher defaults to the genotype's.

  Returns:
    The train summary (also written to train_summary.json): params, flops, test_best, test_last...
  """
  from rnascl_tf.stages import retrain as stage
  return stage.retrain(run, data, robust, optim, config, distill, teacher)


def evaluate(model_path: str, data: DataConfig = DataConfig(), config: EvalConfig = EvalConfig(),
             output_dir: Optional[str] = None) -> dict:
  """Evaluates a .keras model or an exported SavedModel under attack (`python -m rnascl_tf.evaluate`).

  Returns:
    The eval.json content; raises `SanityCheckError` (with the reports written) when a sanity check fails.
  """
  from rnascl_tf.evaluation import engine
  return engine.evaluate_path(model_path, data, config, output_dir=output_dir)


def export(model_path: str, export_base: str, model_name: str, version: int, overwrite: bool = False) -> str:
  """Exports a .keras model for TF Serving (`python -m rnascl_tf.export`); returns the version folder."""
  from rnascl_tf.runtime import artefacts
  from rnascl_tf.serving.export import export_for_serving
  model = artefacts.load_keras_model(model_path, "model")
  return export_for_serving(model, export_base, model_name, version, overwrite=overwrite, source=model_path)
