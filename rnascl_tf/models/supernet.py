"""The weight-sharing supernet: max-width weights, per-block width (and expansion) logits, masks.

Architecture variables are the width logits θ_k ("width_logits_<block>") and, for stages declaring
several expansion ratios, the expansion logits ("expansion_logits_<block>"), created with
`add_weight`, all initialised to zero (equal probabilities). Their `variable.path` contains one of
`ARCH_MARKERS`; `Supernet.arch_variables()` / `weight_variables()` split `trainable_variables` on
that. The Gumbel temperature is a non-trainable weight ("temperature") that a callback assigns.

Masking is documented in `blocks.py`; the differentiable cost in `Supernet.expected_cost` and
`cost.py`.
"""

from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops

from rnascl_tf.models import blocks
from rnascl_tf.models import cost
from rnascl_tf.nas import search_space as ss
from rnascl_tf.nas.gumbel import gumbel_softmax

ARCH_MARKERS = ("width_logits_", "expansion_logits_")
MODES = ("gumbel", "softmax", "argmax", "max")


def is_arch_variable(variable) -> bool:
  """True for width / expansion logits (by `variable.path`, which Keras 3 keeps unique per model)."""
  return any(marker in variable.path for marker in ARCH_MARKERS)


@keras.saving.register_keras_serializable(package="rnascl_tf")
class Supernet(blocks.BlockNet):
  """All candidate widths of a search space in one max-width network with channel masks.

  Args:
    space: a `SearchSpace` (or its dict form).
    input_shape: (height, width, channels) of [0, 1] pixel images.
    num_classes: classifier outputs.
    mean: per-channel pixel means (normalisation happens inside the model).
    std: per-channel pixel standard deviations.
    seed: seed of the model-owned `keras.random.SeedGenerator` used for Gumbel samples.
    initial_temperature: initial value of the `temperature` weight.
    synchronized_bn: BatchNorm statistics over all replicas under tf.distribute.

  Example:
  >>> net = Supernet(ss.get_space("tiny"), (16, 16, 3), 10, [0.5] * 3, [0.25] * 3)
  >>> out = net.forward(np.zeros((2, 16, 16, 3), "float32"), mode="softmax")
  >>> tuple(out["logits"].shape), len(out["taps"]) == len(net.student_layer_names)
  ((2, 10), True)
  """

  def __init__(self, space, input_shape: Sequence[int], num_classes: int, mean: Sequence[float],
               std: Sequence[float], seed: int = 0, initial_temperature: float = 5.0,
               synchronized_bn: bool = False, **kwargs):
    kwargs.setdefault("name", "supernet")
    super().__init__(**kwargs)
    space = blocks.as_space(space)
    specs = ss.block_specs(space)
    self.seed = int(seed)
    self.initial_temperature = float(initial_temperature)
    # All state is created before `_make_layers` builds the model (Keras locks built layers).
    # autocast=False: under a mixed policy the architecture parameters, the Gumbel samples and the masks
    # drawn from them stay float32; only the masked activations are in the compute dtype.
    self.width_logits = [
        self.add_weight(shape=(len(s.width_options),), initializer="zeros", name=f"width_logits_{s.name}",
                        autocast=False)
        for s in specs]
    # Only blocks with a real choice get expansion logits; the others use the constant weight [1].
    self.expansion_logits = [
        self.add_weight(shape=(len(s.expansions),), initializer="zeros", name=f"expansion_logits_{s.name}",
                        autocast=False)
        for s in specs if len(s.expansions) > 1]
    self._expansion_index = {}
    for s in specs:
      if len(s.expansions) > 1:
        self._expansion_index[s.name] = len(self._expansion_index)
    self.temperature = self.add_weight(
        shape=(), initializer=keras.initializers.Constant(self.initial_temperature), trainable=False,
        name="temperature", autocast=False)
    self.seed_generator = keras.random.SeedGenerator(self.seed, name="gumbel_seed")
    self._make_layers(space, input_shape, num_classes, mean, std,
                      [(s.in_max, s.mid_max, s.out_max) for s in specs],
                      synchronized_bn)
    # Constant mask matrices: row i of an output matrix is m_i; see blocks.py for the mid matrix.
    self._out_matrices = [blocks.mask_matrix(s.width_options, s.out_max) for s in specs]
    self._mid_matrices = [
        blocks.mid_mask_matrix(s.in_options, s.expansions if s.has_expand else (1,), s.mid_max)
        for s in specs]

  # --- architecture weights -------------------------------------------------------------------

  def arch_variables(self) -> list:
    """Trainable width / expansion logits (their paths contain one of `ARCH_MARKERS`)."""
    return [v for v in self.trainable_variables if is_arch_variable(v)]

  def weight_variables(self) -> list:
    """Every trainable variable that is not an architecture variable."""
    return [v for v in self.trainable_variables if not is_arch_variable(v)]

  def set_temperature(self, tau: float) -> None:
    """Sets the Gumbel temperature (e.g. from a per-epoch callback)."""
    self.temperature.assign(float(tau))

  def _weights_for(self, logits, mode: str):
    k = logits.shape[0]
    if mode == "gumbel":
      return gumbel_softmax(logits, ops.convert_to_tensor(self.temperature), self.seed_generator)
    if mode == "softmax":
      return ops.softmax(logits)
    if mode == "argmax":
      return ops.one_hot(ops.argmax(logits), k, dtype=logits.dtype)
    # "max": one-hot on the first (widest / listed first) option; the masks become all-ones.
    return ops.one_hot(0, k, dtype=logits.dtype)

  def arch_weights(self, mode: str) -> tuple:
    """Per-block width weights [K_k] and expansion weights [J_k] for `mode`.

    - "gumbel": one relaxed sample per block for the whole batch, from the model's seed generator
      at the current temperature. Under MirroredStrategy the seed state is mirrored, so every
      replica draws the same sample: one architecture per global batch, as on one device.
    - "softmax": softmax(θ); "argmax": one-hot argmax θ; "max": one-hot on the first option
      (maximum width, all-ones masks).

    Blocks without an expansion choice get the constant [1.0].
    """
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    width_w = [self._weights_for(logits, mode) for logits in self.width_logits]
    exp_w = []
    for spec in self.specs:
      idx = self._expansion_index.get(spec.name)
      if idx is None:
        exp_w.append(ops.ones((1,), dtype="float32"))
      else:
        exp_w.append(self._weights_for(self.expansion_logits[idx], mode))
    return width_w, exp_w

  def masks(self, width_weights, expansion_weights) -> list:
    """Per block (mid_mask [mid_max], out_mask [out_max]) from the arch weights (see blocks.py)."""
    out = []
    prev = ops.ones((1,), dtype="float32")  # the stem's width is fixed
    for k in range(len(self.specs)):
      mid = blocks.mid_mask(prev, expansion_weights[k], self._mid_matrices[k])
      out.append((mid, blocks.width_mask(width_weights[k], self._out_matrices[k])))
      prev = width_weights[k]
    return out

  # --- forward ---------------------------------------------------------------------------------

  def forward(self, x, training: bool = False, mode: str = "gumbel", tap_energies=None) -> dict:
    """Runs the supernet under one architecture-weight mode.

    Args:
      x: [N, H, W, C] pixels in [0, 1].
      training: BN mode.
      mode: one of `MODES` (see `arch_weights`).
      tap_energies: None (taps are activations), or "masked" / "unmasked": taps are channel
        energies [N, H, W, 1] from `losses.masked_tap` with that `keep` ("masked" for a weight
        update, "unmasked" for an architecture-only update).

    Returns:
      dict with "logits" [N, classes], "taps" (list in `student_layer_names` order), and the
      per-block "width_weights" and "expansion_weights" actually used (for `expected_cost`).
    """
    width_w, exp_w = self.arch_weights(mode)
    logits, taps = self._run(x, training=training, masks=self.masks(width_w, exp_w), tap_energies=tap_energies)
    return {"logits": logits, "taps": taps, "width_weights": width_w, "expansion_weights": exp_w}

  def call(self, x, training=False):
    """Logits: a Gumbel-sampled architecture when training, the argmax architecture otherwise."""
    return self.forward(x, training=training, mode="gumbel" if training else "argmax")["logits"]

  # --- result and cost -------------------------------------------------------------------------

  def derive(self) -> dict:
    """The searched architecture: argmax θ per block, with the softmax probabilities.

    Returns:
      {"widths": {block: int}, "expansions": {block: int}, "width_probs": {block: [float]},
       "expansion_probs": {block: [float]}}, blocks in network order.
    """
    result = {"widths": {}, "expansions": {}, "width_probs": {}, "expansion_probs": {}}
    for spec, logits in zip(self.specs, self.width_logits):
      probs = _softmax(np.asarray(ops.convert_to_numpy(logits), dtype="float64"))
      result["widths"][spec.name] = int(spec.width_options[int(np.argmax(probs))])
      result["width_probs"][spec.name] = [float(p) for p in probs]
      idx = self._expansion_index.get(spec.name)
      if idx is None:
        result["expansions"][spec.name] = int(spec.expansions[0])
        result["expansion_probs"][spec.name] = [1.0]
      else:
        probs = _softmax(np.asarray(ops.convert_to_numpy(self.expansion_logits[idx]), dtype="float64"))
        result["expansions"][spec.name] = int(spec.expansions[int(np.argmax(probs))])
        result["expansion_probs"][spec.name] = [float(p) for p in probs]
    return result

  def expected_cost(self, width_weights, expansion_weights: Optional[Sequence] = None) -> dict:
    """Differentiable FLOPs (MACs of convs and dense) and params of the architecture distribution.

    Each block's output width is the soft count sum_i w_i c_i, its expansion sum_j v_j e_j; the
    formulas of `cost.architecture_cost` then use products of soft counts. Computed in float64 so
    that one-hot weights give the derived child's integer counts exactly.

    Args:
      width_weights: per block [K_k] weights (e.g. `forward(...)["width_weights"]`).
      expansion_weights: per block [J_k] weights; may be None when no block searches expansions.

    Returns:
      {"flops": float64 scalar tensor, "params": float64 scalar tensor}.
    """
    if len(width_weights) != len(self.specs):
      raise ValueError(f"expected {len(self.specs)} width weight vectors, got {len(width_weights)}")
    if expansion_weights is None:
      if self._expansion_index:
        raise ValueError("this space searches expansion ratios: pass expansion_weights")
      expansion_weights = [None] * len(self.specs)
    widths, exps = [], []
    for spec, w, v in zip(self.specs, width_weights, expansion_weights):
      w = ops.cast(w, "float64")
      widths.append(ops.sum(w * ops.convert_to_tensor(np.asarray(spec.width_options, "float64"))))
      if v is None:
        exps.append(float(spec.expansions[0]))
      else:
        v = ops.cast(v, "float64")
        exps.append(ops.sum(v * ops.convert_to_tensor(np.asarray(spec.expansions, "float64"))))
    result = cost.architecture_cost(self.space, self.image_shape, self.num_classes, widths, exps)
    return {k: ops.cast(v, "float64") for k, v in result.items()}

  def get_config(self):
    return {**self._base_config(), "seed": self.seed, "initial_temperature": self.initial_temperature}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def _softmax(z: np.ndarray) -> np.ndarray:
  e = np.exp(z - z.max())
  return e / e.sum()
