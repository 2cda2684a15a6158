"""genotype.json: the searched architecture and tutor map (versioned schema, validated on load)."""

from typing import Any, Dict, List, Optional

from rnascl_tf.runtime import artefacts as io_utils
from rnascl_tf.configs import TUTOR_MAPS
from rnascl_tf.errors import UserInputError
from rnascl_tf.nas import search_space as ss

SCHEMA = "rnascl_tf/genotype"
VERSION = 1
_REQUIRED = ("schema", "version", "search_space", "input_shape", "num_classes", "normalization", "blocks",
             "student_layers", "teacher", "cost")


def save_genotype(path: str, genotype: Dict[str, Any]) -> None:
  """Validates and writes `genotype` atomically."""
  validate_genotype(genotype, path)
  io_utils.atomic_write_json(path, genotype)


def load_genotype(path: str) -> Dict[str, Any]:
  """Reads and validates a genotype file; a foreign or corrupt file raises UserInputError."""
  g = io_utils.read_json(path, "genotype file (--genotype)")
  validate_genotype(g, path)
  return g


def validate_genotype(g: Any, path: str = "<genotype>") -> None:
  """Checks schema, version, required fields and internal consistency.

  Args:
    g: the parsed genotype.
    path: shown in messages.
  """
  def bad(msg):
    raise UserInputError(f"genotype {path!r}: {msg}")

  if not isinstance(g, dict) or g.get("schema") != SCHEMA:
    bad(f"not an rnascl_tf genotype (expected \"schema\": \"{SCHEMA}\")")
  if g.get("version") != VERSION:
    bad(f"schema version {g.get('version')!r} is not supported (this rnascl_tf reads version {VERSION})")
  missing = [k for k in _REQUIRED if k not in g]
  if missing:
    bad(f"missing fields {missing}")
  blocks = g["blocks"]
  if not isinstance(blocks, list) or not blocks:
    bad("'blocks' must be a non-empty list")
  for i, b in enumerate(blocks):
    for key in ("name", "width", "width_options", "width_probs"):
      if key not in b:
        bad(f"block {i} lacks {key!r}")
    if b["width"] not in b["width_options"]:
      bad(f"block {b['name']}: width {b['width']} is not one of its options {b['width_options']}")
    if len(b["width_probs"]) != len(b["width_options"]):
      bad(f"block {b['name']}: {len(b['width_probs'])} probabilities for {len(b['width_options'])} options")
  teacher_layers = g["teacher"].get("tap_layers") if isinstance(g["teacher"], dict) else None
  if not isinstance(teacher_layers, list) or not teacher_layers:
    bad("'teacher.tap_layers' must list the teacher tap layers")
  names = [t["name"] if isinstance(t, dict) else t for t in teacher_layers]
  if not isinstance(g["student_layers"], list) or not all(isinstance(s, dict) for s in g["student_layers"]):
    bad("'student_layers' must be a list of {\"name\", \"tutor\", \"tutor_probs\"} objects")
  for s in g["student_layers"]:
    for key in ("name", "tutor", "tutor_probs"):
      if key not in s:
        bad(f"student layer entry lacks {key!r}")
    if s["tutor"] not in names:
      bad(f"student layer {s['name']}: tutor {s['tutor']!r} is not a teacher layer")
    if len(s["tutor_probs"]) != len(names):
      bad(f"student layer {s['name']}: {len(s['tutor_probs'])} tutor probabilities for {len(names)} teacher layers")
  _check_student_layers(g, bad, path)


def _check_student_layers(g: Dict[str, Any], bad, path: str) -> None:
  """The tutor map must list exactly the child's student layers, in order: it is applied by position."""
  definition = g["search_space"].get("definition") if isinstance(g["search_space"], dict) else None
  if not isinstance(definition, dict):
    bad("'search_space.definition' must hold the search space the child is built from")
  space = ss.space_from_dict(definition, source=f"genotype {path!r}, search_space.definition")
  expected = ss.student_layer_names(space)
  found = [s["name"] for s in g["student_layers"]]
  if found == expected:
    return
  missing = [n for n in expected if n not in found]
  unknown = [n for n in found if n not in expected]
  if missing or unknown:
    detail = f"missing {missing}, unknown {unknown}"
  else:
    i = next(i for i, (a, b) in enumerate(zip(found, expected)) if a != b)
    detail = f"entry {i} is {found[i]!r} where the child has {expected[i]!r} (the order differs)"
  bad(f"'student_layers' does not match the student layers of the child (space {space.name!r}, "
      f"student_layers={space.student_layers!r}; {len(found)} listed, {len(expected)} in the child): {detail}")


def tutor_map(g: Dict[str, Any]) -> List[int]:
  """Index of the chosen teacher layer for every student layer, in student-layer order."""
  names = [t["name"] if isinstance(t, dict) else t for t in g["teacher"]["tap_layers"]]
  return [names.index(s["tutor"]) for s in g["student_layers"]]


def ablation_tutor_map(g: Dict[str, Any], kind: str, seed: int = 0, n_student: Optional[int] = None) -> List[int]:
  """The tutor map used for retraining: the searched one or an ablation (docs/method.md section 11).

  Args:
    g: a validated genotype.
    kind: "searched" (argmax of the learned tutor distribution), "same_depth" (student layer i of
      n_s -> teacher layer round(i * (n_t - 1) / (n_s - 1)), proportional position), "random"
      (uniform, seeded) or "last_layer" (every student layer -> the last teacher layer).
    seed: seed of the "random" map.
    n_student: the student's layer count when the student is not the genotype's child (e.g. a
      hand-designed baseline); the searched map does not exist for it.

  Returns:
    Per student layer, the index of its teacher layer.
  """
  import numpy as np  # Local: keeps genotype I/O light.

  n_s, n_t = n_student or len(g["student_layers"]), len(g["teacher"]["tap_layers"])
  if kind == "searched":
    if n_student is not None:
      raise UserInputError("the searched tutor map belongs to the genotype's child; choose --tutor_map=same_depth, "
                           "random or last_layer for another student")
    return tutor_map(g)
  if kind == "same_depth":
    return [int(round(i * (n_t - 1) / max(n_s - 1, 1))) for i in range(n_s)]
  if kind == "random":
    return [int(j) for j in np.random.default_rng(seed).integers(0, n_t, n_s)]
  if kind == "last_layer":
    return [n_t - 1] * n_s
  raise UserInputError(f"--tutor_map must be one of {', '.join(TUTOR_MAPS)}, got {kind!r}")


def cost_savings(genotype: Dict[str, Any]) -> str:
  """What the search saved: the child's exact cost against the supernet at maximum width, as a phrase.

  >>> cost_savings({"cost": {"exact_child": {"params": 2000, "flops": 150000},
  ...                          "max_width": {"params": 4000, "flops": 400000}}})
  'the child has 2,000 parameters (maximum 4,000: 50% fewer) and 0.150 MFLOPs (maximum 0.400: 62% fewer)'
  """
  exact, maximum = genotype["cost"]["exact_child"], genotype["cost"]["max_width"]

  def saved(key):
    return f"{1 - exact[key] / maximum[key]:.0%} fewer" if maximum[key] and exact[key] < maximum[key] else "no saving"

  return (f"the child has {exact['params']:,} parameters (maximum {maximum['params']:,}: {saved('params')}) and "
          f"{exact['flops'] / 1e6:.3f} MFLOPs (maximum {maximum['flops'] / 1e6:.3f}: {saved('flops')})")
