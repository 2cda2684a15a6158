"""Teachers as the search and retraining stages see them: loading, checks, tap extraction, manifest.

A teacher is either a built-in model of `rnascl_tf.models.teachers` (taps named by the model itself) or an
external Keras functional / Sequential model saved as `.keras` (taps are layer names). External
subclassed models are refused: their intermediate outputs cannot be read without running their code.

Candidate taps of an external model (a documented heuristic, see `list_candidate_layers`):
- conv: each Conv2D / DepthwiseConv2D / SeparableConv2D layer, moved forward through a directly
  following BatchNormalization and then an activation layer (only while each is the sole consumer),
  so the tap is the conv's output after its BN and activation like the built-in teachers' taps;
- block: each Add layer (moved forward through a directly following activation layer), plus each
  layer whose name contains "block" and ends in "out" or "output" (e.g. "conv2_block1_out").
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import keras

from rnascl_tf.distill.keras_graph import functional_graph, nodes_in_order, producing_layer
from rnascl_tf.errors import UserInputError
from rnascl_tf.models.layers import PixelNormalization
from rnascl_tf.models.teachers import is_builtin_teacher
from rnascl_tf.runtime import artefacts as io_utils

MANIFEST_SCHEMA = "rnascl_tf/teacher_manifest"
MANIFEST_VERSION = 1

_AUTO_SPECS = {"auto": "conv", "auto_conv": "conv", "auto_block": "block"}
_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_ACTIVATION_TYPES = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
                     keras.layers.ELU, keras.layers.PReLU)
# Layers that show the model maps [0, 1] pixels itself before its first conv.
_INPUT_SCALING_TYPES = (PixelNormalization, keras.layers.Normalization, keras.layers.Rescaling)
_LIST_LAYERS_HINT = "run `python -m rnascl_tf.list_layers --model=<teacher.keras>` to see every candidate"


def _require_graph(model, what: str = "teacher (--teacher_path)"):
  graph = functional_graph(model)
  if graph is None:
    raise UserInputError(
        f"{what}: {type(model).__name__} is a subclassed Keras model that is not one of rnascl_tf's "
        "built-in teachers; taps need a functional or Sequential model (keras.Model(inputs, outputs)) "
        "whose intermediate layer outputs can be read. Re-save the teacher as a functional model.")
  return graph


def _per_example_shape(tensor) -> Tuple[Optional[int], ...]:
  return tuple(None if d is None else int(d) for d in tensor.shape[1:])


def _flat_layers(model) -> List[keras.layers.Layer]:
  """Layers in model order, nested models expanded (used for the pixel-input check)."""
  out = []
  for layer in model.layers:
    if isinstance(layer, keras.Model) and functional_graph(layer) is not None:
      out.extend(_flat_layers(layer))
    else:
      out.append(layer)
  return out


def _external_candidates(model) -> Dict[str, List[Tuple[str, Tuple]]]:
  graph = _require_graph(model)
  nodes = nodes_in_order(graph)
  consumers: Dict[int, List[Any]] = {}
  for node in nodes:
    for t in node.input_tensors:
      consumers.setdefault(id(t), []).append(node)

  def follow(node, types):
    # The single consumer of `node`'s single output, if it is one of `types`; else None.
    if len(node.output_tensors) != 1:
      return None
    nxt = consumers.get(id(node.output_tensors[0]), [])
    if len(nxt) == 1 and isinstance(nxt[0].operation, types):
      return nxt[0]
    return None

  def advance(node, steps):
    for types in steps:
      node = follow(node, types) or node
    return node

  conv, block, seen_block = [], [], set()
  for node in nodes:
    op = node.operation
    if isinstance(op, _CONV_TYPES):
      tap = advance(node, (keras.layers.BatchNormalization, _ACTIVATION_TYPES))
      conv.append((tap.operation.name, _per_example_shape(tap.output_tensors[0])))
    name = op.name.lower()
    tap = None
    if isinstance(op, keras.layers.Add):
      tap = advance(node, (_ACTIVATION_TYPES,))
    elif "block" in name and (name.endswith("out") or name.endswith("output")):
      tap = node
    if tap is not None and tap.operation.name not in seen_block:
      seen_block.add(tap.operation.name)
      block.append((tap.operation.name, _per_example_shape(tap.output_tensors[0])))
  return {"conv": conv, "block": block}


def _builtin_tap_shapes(model, input_shape=None) -> Dict[str, Tuple]:
  shape = tuple(input_shape) if input_shape is not None else model.image_shape
  # Symbolic call: shapes only, nothing is computed.
  _, taps = model.call_with_taps(keras.KerasTensor((None,) + tuple(shape), dtype="float32"), training=False)
  return {name: _per_example_shape(t) for name, t in taps.items()}


def list_candidate_layers(model) -> Dict[str, List[Tuple[str, Tuple]]]:
  """Candidate tap layers of a teacher, grouped by kind.

  Built-in teachers report their own taps (`tap_names`); external functional / Sequential models
  use the heuristic of this module's docstring. Nested sub-models count as one layer.

  Args:
    model: a built-in teacher or an external functional / Sequential Keras model.

  Returns:
    {"conv": [(name, per-example shape)], "block": [(name, shape)]}, each in forward order.

  Raises:
    UserInputError: a subclassed model that is not a built-in teacher.
  """
  if is_builtin_teacher(model):
    shapes = _builtin_tap_shapes(model)
    return {kind: [(n, shapes[n]) for n in model.tap_names(kind)] for kind in ("conv", "block")}
  return _external_candidates(model)


def resolve_teacher_layers(model, spec: Union[str, Sequence[str]]) -> List[str]:
  """Turns a `--teacher_layers` value into an ordered list of tap names.

  Args:
    model: the teacher.
    spec: "auto" or "auto_conv" (every conv tap), "auto_block" (every block tap), a comma-separated
      string of names, or a list of names (kept in the given order).

  Returns:
    The tap names.

  Raises:
    UserInputError: unknown names, an empty list, or an automatic choice that finds nothing.
  """
  if isinstance(spec, str):
    key = spec.strip()
    if key in _AUTO_SPECS:
      kind = _AUTO_SPECS[key]
      names = [n for n, _ in list_candidate_layers(model)[kind]]
      if not names:
        raise UserInputError(
            f"--teacher_layers={key}: the teacher has no {kind} candidates (see the heuristic in "
            f"rnascl_tf/distill/teacher_taps.py); name the layers explicitly; {_LIST_LAYERS_HINT}")
      return names
    names = [n.strip() for n in key.split(",") if n.strip()]
  else:
    names = [str(n).strip() for n in spec]
  if not names:
    raise UserInputError(
        f"--teacher_layers is empty; give 'auto', 'auto_conv', 'auto_block' or layer names; {_LIST_LAYERS_HINT}")
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise UserInputError(f"--teacher_layers names {', '.join(dupes)} more than once")
  if is_builtin_teacher(model):
    valid = model.tap_names("conv") + model.tap_names("block")
  else:
    valid = [layer.name for layer in _require_graph(model).layers]
  valid_set = set(valid)
  missing = [n for n in names if n not in valid_set]
  if missing:
    candidates = list_candidate_layers(model)
    examples = [n for n, _ in candidates["conv"][:3] + candidates["block"][:2]] or valid[:5]
    raise UserInputError(
        f"--teacher_layers: no layer named {', '.join(map(repr, missing))} in teacher {model.name!r}; "
        f"valid names look like {', '.join(examples)}; {_LIST_LAYERS_HINT}")
  return names


class TeacherTaps:
  """Runs a teacher in inference mode and returns its logits and chosen intermediate activations.

  Built-in teachers run through `call_with_taps`; functional / Sequential teachers through one
  sub-model `keras.Model(inputs, [logits] + tap outputs)`, built once here.

  Args:
    model: a built-in teacher or an external functional / Sequential model.
    layer_names: tap names (from `resolve_teacher_layers`).
    input_shape: (H, W, C) the teacher will see; sets `output_shapes` when the model's own input
      shape has unknown sizes. Defaults to the model's input shape.

  Example:
  >>> from rnascl_tf.models.teachers import build_teacher
  >>> teacher = build_teacher("small_cnn", (16, 16, 1), 10, [0.3], [0.4])
  >>> taps = TeacherTaps(teacher, ["stem/conv", "stage3/block0/out"])
  >>> logits, acts = taps(keras.ops.zeros((2, 16, 16, 1)))
  >>> taps.output_shapes, [tuple(a.shape) for a in acts]
  ([(16, 16, 16), (4, 4, 64)], [(2, 16, 16, 16), (2, 4, 4, 64)])
  """

  def __init__(self, model, layer_names: Sequence[str], input_shape: Optional[Sequence[int]] = None):
    self.model = model
    self.layer_names = list(layer_names)
    self._builtin = is_builtin_teacher(model)
    if self._builtin:
      resolve_teacher_layers(model, self.layer_names)
      self.input_shape = tuple(input_shape) if input_shape is not None else tuple(model.image_shape)
      shapes = _builtin_tap_shapes(model, self.input_shape)
      self.output_shapes = [shapes[n] for n in self.layer_names]
      self._extractor = None
      return
    graph = _require_graph(model)
    resolve_teacher_layers(model, self.layer_names)
    if len(graph.inputs) != 1:
      raise UserInputError(f"teacher (--teacher_path): expected one image input, the model has {len(graph.inputs)}")
    try:
      outputs = [graph.get_layer(n).output for n in self.layer_names]
    except (AttributeError, ValueError) as e:  # A layer called more than once has no single output.
      raise UserInputError(f"--teacher_layers: cannot read the output of one of {self.layer_names} ({e})") from e
    # A single input tensor (not a one-element list), so calling with a tensor matches its structure.
    self._extractor = keras.Model(graph.inputs[0], [graph.outputs[0]] + outputs, name=f"{model.name}_taps")
    self.input_shape = (tuple(input_shape) if input_shape is not None
                        else _per_example_shape(graph.inputs[0]))
    if any(d is None for d in self.input_shape):
      self.output_shapes = [_per_example_shape(graph.get_layer(n).output) for n in self.layer_names]
    else:
      specs = self._extractor.compute_output_spec(keras.KerasTensor((None,) + self.input_shape, dtype="float32"))
      self.output_shapes = [_per_example_shape(s) for s in specs[1:]]

  def __call__(self, x) -> Tuple[Any, List[Any]]:
    """Returns `(logits, [activation per layer name])`, always with `training=False`."""
    if self._builtin:
      logits, taps = self.model.call_with_taps(x, training=False)
      return logits, [taps[n] for n in self.layer_names]
    outputs = self._extractor(x, training=False)
    return outputs[0], list(outputs[1:])


def _source(path: Optional[str]) -> str:
  return f"teacher (--teacher_path={path})" if path else "teacher (--teacher_path)"


def _declared_input_shape(model) -> Optional[Tuple]:
  if is_builtin_teacher(model):
    return tuple(model.image_shape)
  graph = functional_graph(model)
  if graph is None:
    return None
  if len(graph.inputs) != 1:
    return ("multiple",)
  return _per_example_shape(graph.inputs[0])


def validate_teacher(model, input_shape: Sequence[int], num_classes: int, assume_pixel_input: bool = False,
                     path: Optional[str] = None, source: Optional[str] = None) -> None:
  """Checks that a teacher fits the dataset and this project's pixel-input contract.

  Args:
    model: the teacher.
    input_shape: the dataset's (H, W, C).
    num_classes: the dataset's class count.
    assume_pixel_input: skip the check that the model normalises [0, 1] pixels itself
      (`--teacher_assume_pixel_input`).
    path: the teacher file, for messages.
    source: names the teacher in messages instead of `--teacher_path=<path>`.

  Raises:
    UserInputError: naming `--teacher_path` and the file, when the input shape does not accept
      (H, W, C), the output is not [batch, num_classes] logits, or no PixelNormalization /
      Normalization / Rescaling layer precedes the first conv (unless `assume_pixel_input`).
  """
  src = source or _source(path)
  input_shape = tuple(int(d) for d in input_shape)
  declared = _declared_input_shape(model)
  if declared is None:
    _require_graph(model, src)
  if declared == ("multiple",):
    raise UserInputError(f"{src}: expected a model with one image input, this one has several")
  if len(declared) != len(input_shape) or any(d is not None and d != e for d, e in zip(declared, input_shape)):
    raise UserInputError(
        f"{src}: the model takes inputs of shape {declared} (H, W, C) but the dataset's images are "
        f"{input_shape}; use a teacher built for this dataset")
  fn = model if is_builtin_teacher(model) else functional_graph(model)
  try:
    spec = fn.compute_output_spec(keras.KerasTensor((2,) + input_shape, dtype="float32"))
  except Exception as e:  # Any failure here means the model cannot run on these images.
    raise UserInputError(f"{src}: the model cannot run on {input_shape} images ({type(e).__name__}: {e})") from e
  out = spec[0] if isinstance(spec, (list, tuple)) else spec
  if isinstance(out, dict) or len(out.shape) != 2 or out.shape[-1] != num_classes:
    got = "a dict" if isinstance(out, dict) else str(tuple(out.shape))
    raise UserInputError(
        f"{src}: expected the (first) output to be logits of shape (batch, {num_classes}) for "
        f"{num_classes} classes, got {got}")
  if not is_builtin_teacher(model):
    last = producing_layer(functional_graph(model).outputs[0])
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if isinstance(last, keras.layers.Softmax) or activation in ("softmax", "sigmoid"):
      raise UserInputError(
          f"{src}: the output layer {last.name!r} applies {activation or 'softmax'}; the teacher must "
          "output logits (remove the final softmax/sigmoid before saving)")
  if assume_pixel_input or is_builtin_teacher(model):
    return
  for layer in _flat_layers(model):
    if isinstance(layer, _INPUT_SCALING_TYPES):
      return
    if isinstance(layer, _CONV_TYPES):
      break
  raise UserInputError(
      f"{src}: no PixelNormalization, keras Normalization or Rescaling layer before the first conv, so "
      "the model does not visibly take [0, 1] pixel images (this project attacks in pixel space, "
      "normalisation must be inside the model). Add rnascl_tf.models.layers.PixelNormalization(mean, std) "
      "as its first layer, or pass --teacher_assume_pixel_input if the model does map [0, 1] pixels "
      "itself in another way")


def load_teacher(path: str, input_shape: Sequence[int], num_classes: int,
                 layers_spec: Union[str, Sequence[str]] = "auto",
                 assume_pixel_input: bool = False, source: Optional[str] = None) -> Tuple[keras.Model, TeacherTaps]:
  """Loads a `.keras` teacher (safe mode), validates it and prepares its taps.

  Args:
    path: the `.keras` file (`--teacher_path`).
    input_shape: the dataset's (H, W, C).
    num_classes: the dataset's class count.
    layers_spec: the `--teacher_layers` value (see `resolve_teacher_layers`).
    assume_pixel_input: the `--teacher_assume_pixel_input` flag (see `validate_teacher`).
    source: where the path came from, for messages (default: `--teacher_path`); e.g. the genotype
      that recorded it.

  Returns:
    (model, TeacherTaps).
  """
  model = io_utils.load_keras_model(path, source or _source(None))  # The load messages quote the path already.
  src = source or _source(path)
  if not is_builtin_teacher(model):
    _require_graph(model, src)
  validate_teacher(model, input_shape, num_classes, assume_pixel_input=assume_pixel_input, path=path, source=src)
  names = resolve_teacher_layers(model, layers_spec)
  return model, TeacherTaps(model, names, input_shape=input_shape)


def _normalization_of(model) -> Optional[Dict[str, List[float]]]:
  if is_builtin_teacher(model):
    return {"mean": list(model.normalizer.mean), "std": list(model.normalizer.std)}
  for layer in _flat_layers(model) if functional_graph(model) is not None else []:
    if isinstance(layer, PixelNormalization):
      return {"mean": list(layer.mean), "std": list(layer.std)}
    if isinstance(layer, keras.layers.Normalization) and layer.built:
      mean = [float(v) for v in keras.ops.convert_to_numpy(layer.mean).reshape(-1)]
      var = [float(v) for v in keras.ops.convert_to_numpy(layer.variance).reshape(-1)]
      return {"mean": mean, "std": [math.sqrt(v) for v in var]}
    if isinstance(layer, _CONV_TYPES):
      break
  return None


def teacher_manifest(model, arch: str, taps: TeacherTaps, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """A JSON-able description of the teacher, written next to it as `teacher_manifest.json`.

  Args:
    model: the teacher.
    arch: its architecture name (a `TEACHER_ARCHS` entry or e.g. "external").
    taps: the chosen taps.
    info: extra top-level entries (metrics, flags, seed, source path, ...).

  Returns:
    {"schema", "version", "arch", "params", "input_shape", "num_classes", "normalization"
    ({"mean", "std"} or None), "tap_layers" ([{"name", "shape"}] in order), **info}.
  """
  if is_builtin_teacher(model):
    num_classes = int(model.num_classes)
  else:
    num_classes = int(functional_graph(model).outputs[0].shape[-1])
  manifest = {
      "schema": MANIFEST_SCHEMA,
      "version": MANIFEST_VERSION,
      "arch": arch,
      "params": int(model.count_params()),
      "input_shape": [None if d is None else int(d) for d in taps.input_shape],
      "num_classes": num_classes,
      "normalization": _normalization_of(model),
      "tap_layers": [{"name": n, "shape": [None if d is None else int(d) for d in s]}
                     for n, s in zip(taps.layer_names, taps.output_shapes)],
  }
  clash = sorted(set(info or {}) & set(manifest))
  if clash:
    raise ValueError(f"teacher_manifest: info must not override {clash}")
  manifest.update(info or {})
  return manifest


_REQUIRED_KEYS = ("arch", "params", "input_shape", "num_classes", "normalization", "tap_layers")


def read_teacher_manifest(path: str) -> Dict[str, Any]:
  """Reads and checks a `teacher_manifest.json`.

  Args:
    path: the manifest file.

  Returns:
    The manifest dict.

  Raises:
    UserInputError: a missing, corrupt or foreign file, or a newer schema version.
  """
  what = "teacher manifest"
  data = io_utils.read_json(path, what)
  if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
    found = data.get("schema") if isinstance(data, dict) else type(data).__name__
    raise UserInputError(f"{what}: {path!r} is not a teacher manifest (schema {found!r}, expected {MANIFEST_SCHEMA!r})")
  if data.get("version") != MANIFEST_VERSION:
    raise UserInputError(
        f"{what}: {path!r} has version {data.get('version')!r}; this rnascl_tf reads version {MANIFEST_VERSION}")
  missing = [k for k in _REQUIRED_KEYS if k not in data]
  bad_taps = not isinstance(data.get("tap_layers"), list) or not all(
      isinstance(t, dict) and "name" in t and "shape" in t for t in data.get("tap_layers") or [])
  if missing or bad_taps:
    raise UserInputError(f"{what}: {path!r} is incomplete or corrupt (missing {missing or ['valid tap_layers']})")
  return data
