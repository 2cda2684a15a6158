"""Shared test helpers: tiny datasets, an untrained tiny teacher, a tiny search model, CLI runs."""

import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.nas import search_space as ss
from rnascl_tf.distill import teacher_taps as teacher_io
from rnascl_tf.models import teachers
from rnascl_tf.nas.search_model import SearchModel
from rnascl_tf.configs import SearchConfig
from rnascl_tf.models.supernet import Supernet

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHAPE = (8, 8, 1)
CLASSES = 10


def tiny_teacher(shape=SHAPE, classes=CLASSES, seed=0) -> keras.Model:
  """An untrained small_cnn at a quarter width: enough taps for distillation mechanics."""
  keras.utils.set_random_seed(seed)
  return teachers.build_teacher("small_cnn", shape, classes, [0.5] * shape[-1], [0.25] * shape[-1],
                                width_multiplier=0.25)


def tiny_child(shape=SHAPE, classes=CLASSES, seed=0):
  """The widest child of the "tiny" space: a student with `call_with_taps` (cross-layer distillation)."""
  from rnascl_tf.models import child as child_lib  # Local: only the objective tests need it.

  keras.utils.set_random_seed(seed)
  space = ss.get_space("tiny")
  specs = ss.block_specs(space)
  choices = {"widths": {b.name: b.out_max for b in specs}, "expansions": {b.name: b.expansions[0] for b in specs}}
  return child_lib.build_child_from_choices(space, choices, shape, classes, [0.5] * shape[-1], [0.25] * shape[-1])


def save_tiny_teacher(path: str, shape=SHAPE, classes=CLASSES) -> str:
  io_utils.atomic_save_keras(tiny_teacher(shape, classes), path)
  return path


def tiny_search_model(cfg=None, seed=0, synchronized_bn=False, arch_lr=0.1, weight_lr=0.05, teacher=None):
  """A compiled SearchModel on the tiny space with pre-built SGD/Adam optimisers (call in a scope)."""
  teacher = teacher or tiny_teacher(seed=seed)
  taps = teacher_io.TeacherTaps(teacher, teacher.tap_names("conv"))
  keras.utils.set_random_seed(seed)
  supernet = Supernet(ss.get_space("tiny"), SHAPE, CLASSES, [0.5], [0.25], seed=seed,
                      synchronized_bn=synchronized_bn)
  arch_opt = keras.optimizers.Adam(arch_lr)
  model = SearchModel(supernet, taps, cfg or SearchConfig(resource="none"), arch_opt, seed=seed)
  w_opt = keras.optimizers.SGD(weight_lr, momentum=0.9)
  w_opt.build(model.weight_variables())
  arch_opt.build(model.arch_variables())
  model.compile(optimizer=w_opt)
  return model


def random_search_batches(batch=8, steps=3, seed=0):
  """A fixed list of ((xw, yw), (xa, ya)) batches of random pixels and labels."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(steps):
    sides = []
    for _ in range(2):
      sides.append((rng.uniform(0, 1, (batch,) + SHAPE).astype("float32"),
                    rng.integers(0, CLASSES, (batch,)).astype("int32")))
    out.append(tuple(sides))
  return out


def as_dataset(batches):
  xs = tuple(np.stack([b[i][j] for b in batches]) for i in range(2) for j in range(2))
  ds = tf.data.Dataset.from_tensor_slices(xs)
  return ds.map(lambda a, b, c, d: ((a, b), (c, d)))


def run_cli(module: str, *args, timeout=600, check=True, env=None) -> subprocess.CompletedProcess:
  """Runs `python -m module args` (or `python script.py args` for a .py path) from the repository root
  and returns the completed process."""
  full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
  target = [module] if module.endswith(".py") else ["-m", module]
  proc = subprocess.run([sys.executable, *target, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=full_env)
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                         f"stderr:\n{proc.stderr[-5000:]}")
  return proc


def write_image_folder(root, split, per_class, size=(6, 5), fmt="png", classes=("cat", "dog", "emu"), seed=None):
  """Writes random images as <root>/<split>/<class>/<NNN>.<fmt>; returns {path: (uint8 image, class)}."""
  rng = np.random.default_rng(len(split) * 7 + per_class if seed is None else seed)
  written = {}
  for cls in classes:
    os.makedirs(os.path.join(root, split, cls), exist_ok=True)
    for i in range(per_class):
      img = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
      path = os.path.join(root, split, cls, f"{i:03d}.{fmt}")
      encoded = tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img)
      tf.io.write_file(path, encoded)
      written[path] = (img, cls)
  return written
