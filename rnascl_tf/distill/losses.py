"""Per-example losses of RNAS-CL: cross-layer attention distillation, CE, Hinton KD, replica scaling.

Every loss here returns one value per example ([B]); reduce it with `replica_mean` so the update is
the same on one device and on N replicas (Keras / tf.distribute sum gradients over replicas).
See docs/method.md section 7 (cross-layer loss) and docs/keras_notes.md note 5 (loss scaling).
"""

import functools
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from keras import ops

from rnascl_tf.distill.keras_graph import in_xla_context
from rnascl_tf.nas.gumbel import gumbel_softmax

# Norm floor of docs/method.md section 7: an all-zero map stays zero instead of becoming NaN.
_NORM_EPS = 1e-12
TUTOR_MODES = ("gumbel", "gumbel_hard", "softmax", "argmax")


def channel_energy(activation):
  """sum_c A[b, h, w, c]^2 as a [B, H, W, 1] float32 "energy map" (the un-normalised attention map).

  Cast before squaring: float16/bfloat16 activations would overflow or lose the small values.
  """
  a = ops.cast(activation, "float32")
  if in_xla_context():
    # XLA fuses these two into one reduction itself, and it has no EuclideanNorm kernel.
    return ops.sum(ops.square(a), axis=-1, keepdims=True)
  return _fused_energy(a)


@tf.custom_gradient
def _fused_energy(a):
  # Square + Sum writes and rereads a squared copy of every activation; EuclideanNorm is one
  # reduction pass and only its [B, H, W, 1] result is squared (2.4x faster for a 128x32x32x64 tap on
  # CPU; the search step takes ~160 energies: BUILD.md, search step overhead). Its own gradient
  # divides by the norm (NaN for an all-zero map); d/da sum_c a^2 = 2 a.
  energy = tf.square(tf.math.reduce_euclidean_norm(a, axis=-1, keepdims=True))

  def grad(g):
    return a * (2.0 * g)

  return energy, grad


def energy_maps(energy, grid: int):
  """Attention maps from energy maps: resized bilinearly (half-pixel centres, no antialiasing) to
  grid x grid, flattened and divided by max(||a||_2, 1e-12) per example.

  Args:
    energy: [B, H, W, 1] from `channel_energy` (or `masked_tap`).
    grid: side of the common grid G.

  Returns:
    [B, G*G] float32 tensor; each row has unit norm, or is all zero for an all-zero map.
  """
  return _normalised(_resized(energy, grid), grid)[:, 0]


@functools.lru_cache(maxsize=None)
def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] float32 matrix of 1-D bilinear resizing with half-pixel centres and edge clamping
  (TensorFlow's `resize` without antialiasing, applied to one axis)."""
  m = np.zeros((n_out, n_in), np.float64)
  x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  lo = np.floor(x)
  frac = x - lo
  rows = np.arange(n_out)
  np.add.at(m, (rows, np.clip(lo, 0, n_in - 1).astype(int)), 1.0 - frac)
  np.add.at(m, (rows, np.clip(lo + 1, 0, n_in - 1).astype(int)), frac)
  return m.astype(np.float32)


def _resized(energies, grid: int):
  """[B, G, G, k] float32: energy maps [B, H, W, k] resized bilinearly (half-pixel centres, no
  antialiasing) to grid x grid."""
  a = ops.cast(energies, "float32")
  h, w = a.shape[1], a.shape[2]
  if h == grid and w == grid:
    return a
  if h is None or w is None or not in_xla_context():
    # TensorFlow's own kernel reads the channels-last layout directly; the matrix form below needs
    # transposes around its matrix products and made the uncompiled step ~8% slower (BUILD.md).
    return ops.image.resize(a, (grid, grid), interpolation="bilinear", antialias=False)
  # Under XLA: bilinear resizing is one fixed matrix per axis. The resize op and its gradient lower
  # to gather / slice / pad kernels whose compilation set the search step's memory peak; two small
  # matrix products compile to fewer, simpler kernels (BUILD.md, peak memory).
  if h != grid:
    a = ops.einsum("gh,bhwk->bgwk", _bilinear_matrix(h, grid), a)
  if w != grid:
    a = ops.einsum("pw,bgwk->bgpk", _bilinear_matrix(w, grid), a)
  return a


def _normalised(resized, grid: int):
  """[B, k, G*G]: the maps [B, G, G, k] flattened and divided by max(||a||_2, 1e-12) per map."""
  a = ops.transpose(ops.reshape(resized, (-1, grid * grid, resized.shape[-1])), (0, 2, 1))
  # sqrt(max(|a|^2, eps^2)) == max(|a|, eps), but never differentiates sqrt at 0: under XLA
  # (jit_compile) max(sqrt(.), eps) gives a NaN gradient for an all-zero map, and a dead student
  # layer must not poison the weight update.
  sq_norm = ops.sum(ops.square(a), axis=-1, keepdims=True)
  return a / ops.sqrt(ops.maximum(sq_norm, _NORM_EPS * _NORM_EPS))


def attention_maps(activation, grid: int):
  """Spatial attention map of an activation: `energy_maps(channel_energy(activation), grid)`.

  Args:
    activation: [B, H, W, C] tensor (any float dtype; computed in float32).
    grid: side of the common grid G.

  Returns:
    [B, G*G] float32 tensor; each row has unit norm, or is all zero for an all-zero activation.
  """
  return energy_maps(channel_energy(activation), grid)


def masked_tap(value, mask=None, keep: str = "masked"):
  """(value * mask, channel_energy(value * mask)) for a student tap, with a memory-lean gradient.

  Values and gradients are those of the two-step form (`value * mask`, then `channel_energy`); what
  differs is what the backward pass keeps. Autodiff of the two-step form computes the energy's
  contribution 2 (value * mask) g_energy as soon as the loss exists and holds one activation-sized
  tensor per tap until the main backward pass reaches the tap, and it keeps the product for the
  square's gradient even where nothing else needs it. Here one gradient function takes both incoming
  gradients, and `keep` picks the tensor it is written in, so that it keeps nothing the rest of the
  backward pass does not keep already:

  - "masked" (weight updates): the product `value * mask`, which the next layer keeps for its
    weight gradient; the mask's gradient (not needed then) is pruned from the graph.
  - "unmasked" (architecture updates): `value`, which the mask's own gradient keeps; no weight
    gradient is taken, so nothing else would keep the product.

  Measured in scripts/bench_memory.py (BUILD.md).

  Args:
    value: [B, H, W, C] activation.
    mask: optional [C] channel mask (the supernet's expected width mask); None for an unmasked tap.
      It multiplies in the activation's dtype, but its gradient is summed and returned in float32.
    keep: "masked" or "unmasked", see above (the same numbers either way).

  Returns:
    (masked value [B, H, W, C] in value's dtype, energy [B, H, W, 1] float32).
  """
  if keep not in _MASKED_TAP_ENERGY:
    raise ValueError(f"keep must be 'masked' or 'unmasked', got {keep!r}")
  if mask is None:
    return _tap_energy(value)
  # float32 into the op, cast inside: under mixed precision the mask's gradient (a sum over batch and
  # space) is accumulated in float32; float16 sums on CPU accumulate in float16 and stall.
  return _MASKED_TAP_ENERGY[keep](value, ops.cast(mask, "float32"))


def _two_g_energy(g_energy, dtype):
  """2 * g_energy ([B, H, W, 1] float32) in the activation dtype, or None if the energy is unused."""
  return None if g_energy is None else ops.cast(2.0 * g_energy, dtype)


def _plus(a, b):
  """a + b where either may be None (an unused output's gradient)."""
  return b if a is None else (a if b is None else a + b)


# The gradients of a tap are a few elementwise products over an activation-sized tensor. Unfused, each
# product and sum writes and rereads such a tensor; XLA fuses them into one pass (the masked weight
# gradient costs what plain autodiff's `g * mask` costs). BUILD.md, search step overhead.
@tf.function(jit_compile=True)
def _fused_tap_gradient(g_out, out, two_ge, mask=None):
  """(g_out + out * two_ge) [* mask]: the value's gradient when `out` is the kept tensor."""
  g = g_out + out * two_ge
  return g if mask is None else g * mask


@tf.function(jit_compile=True)
def _fused_tap_gradients(g_out, value, two_ge, mask):
  """(G * mask, G * value) with G = g_out + value * mask * two_ge: the value's gradient and the
  mask's before its sum, when `value` is the kept tensor."""
  g = g_out + value * (two_ge * mask)
  return g * mask, g * value


@tf.custom_gradient
def _tap_energy(value):
  def grad(g_value, g_energy):
    two_ge = _two_g_energy(g_energy, value.dtype)
    if two_ge is None or g_value is None:
      return _plus(g_value, None if two_ge is None else value * two_ge)
    return _fused_tap_gradient(g_value, value, two_ge)

  return (tf.identity(value), channel_energy(value)), grad


def _sum_to_mask(t, mask):
  """The mask's gradient: `t` summed over every axis but the channels, in the mask's dtype (float32)."""
  return ops.reshape(ops.sum(ops.cast(t, mask.dtype), axis=list(range(len(t.shape) - 1))), ops.shape(mask))


def _masked_tap_energy(keep_product: bool):
  """The custom-gradient op of `masked_tap` for one `keep` choice (same numbers, other kept tensor)."""

  @tf.custom_gradient
  def masked_tap_energy(value, mask):
    m = ops.cast(mask, value.dtype)  # The float32 mask in the activation's dtype (the same tensor in float32).
    out = value * m

    def grad(g_out, g_energy):
      # G = g_out + 2 out g_energy is the gradient w.r.t. out (out = value * mask, written in the
      # kept tensor); d/d value = G mask, d/d mask = sum over B, H, W of G value.
      two_ge = _two_g_energy(g_energy, value.dtype)
      if two_ge is not None and g_out is not None:
        if keep_product:
          # A weight update prunes the mask's gradient (the second output) from the graph.
          return (_fused_tap_gradient(g_out, out, two_ge, m),
                  _sum_to_mask(_fused_tap_gradient(g_out, out, two_ge) * value, mask))
        g_value, g_mask = _fused_tap_gradients(g_out, value, two_ge, m)
        return g_value, _sum_to_mask(g_mask, mask)
      extra = None if two_ge is None else (out * two_ge if keep_product else value * (two_ge * m))
      g = _plus(g_out, extra)
      return g * m, _sum_to_mask(g * value, mask)

    return (out, channel_energy(out)), grad

  return masked_tap_energy


_MASKED_TAP_ENERGY = {"masked": _masked_tap_energy(True), "unmasked": _masked_tap_energy(False)}


def _stack_maps(energies: Sequence, grid: int):
  """[B, n, G*G] stack of the attention maps of a list of energy maps [B, H_i, W_i, 1].

  Maps of one spatial size are resized together as the channels of one tensor, and then all maps
  are normalised together: the same numbers as one op chain per map (resizing and normalising are
  per channel), but far fewer kernels under XLA, whose CPU compiler's memory grows with each of
  them (a search step has 81 taps per batch; BUILD.md, peak memory).
  """
  if not energies:
    raise ValueError("need at least one activation to distil from / to")
  groups = {}
  for i, e in enumerate(energies):
    size = tuple(e.shape[1:3])
    # A map of unknown size is its own group: two unknown sizes may differ.
    groups.setdefault(size if None not in size else ("unknown", i), []).append(i)
  order = [i for members in groups.values() for i in members]
  resized = [_resized(ops.concatenate([energies[i] for i in members], axis=-1), grid)
             for members in groups.values()]
  stacked = resized[0] if len(resized) == 1 else ops.concatenate(resized, axis=-1)
  if order != sorted(order):  # Back to the taps' order (the tutor map indexes it).
    stacked = ops.take(stacked, [order.index(i) for i in range(len(order))], axis=-1)
  return _normalised(stacked, grid)


def layer_distances(student_acts: Sequence, teacher_acts: Sequence, grid: int):
  """Squared distances between every student and every teacher attention map, per example.

  One batched einsum: d_bij = |s_bi|^2 + |t_bj|^2 - 2 s_bi . t_bj, clamped at 0. For unit maps this
  is the 2 - 2 S.T of docs/method.md section 7; keeping the norms also makes it exact for all-zero maps (whose
  distance to a unit map is 1, not 2).

  Args:
    student_acts: list of n_s activations [B, H_i, W_i, C_i] (shapes may differ).
    teacher_acts: list of n_t activations [B, H_j, W_j, C_j] (shapes may differ).
    grid: side of the common attention grid.

  Returns:
    [B, n_s, n_t] float32 tensor of squared L2 distances.
  """
  return layer_distances_from_energies([channel_energy(a) for a in student_acts],
                                       [channel_energy(a) for a in teacher_acts], grid)


def layer_distances_from_energies(student_energies: Sequence, teacher_energies: Sequence, grid: int):
  """`layer_distances` from energy maps [B, H, W, 1] (`channel_energy`, `masked_tap`).

  The training steps use this form: the teacher's activations are reduced to energies as soon as
  the teacher has run (so they are not kept), the student's come from `masked_tap`.
  """
  s = _stack_maps(student_energies, grid)
  t = _stack_maps(teacher_energies, grid)
  dot = ops.einsum("bid,bjd->bij", s, t)
  s_sq = ops.sum(ops.square(s), axis=-1)[:, :, None]
  t_sq = ops.sum(ops.square(t), axis=-1)[:, None, :]
  # Rounding can make identical maps come out at -1e-7; a distance is never negative.
  return ops.maximum(s_sq + t_sq - 2.0 * dot, 0.0)


def cross_layer_loss(distances, tutor_weights):
  """Cross-layer distillation loss, linear in the tutor weights (docs/method.md section 7).

  Args:
    distances: [B, n_s, n_t] from `layer_distances`.
    tutor_weights: g, [n_s, n_t], rows summing to 1 (from `tutor_weights`).

  Returns:
    [B] per-example loss (1 / n_s) sum_ij g_ij d_bij.
  """
  g = ops.cast(tutor_weights, "float32")
  n_s = ops.cast(ops.shape(g)[0], "float32")
  return ops.einsum("bij,ij->b", ops.cast(distances, "float32"), g) / n_s


def fixed_tutor_loss(distances, tutor_map: Sequence[int]):
  """Cross-layer loss for a fixed tutor map (retraining): (1 / n_s) sum_i d_b[i, map[i]].

  Args:
    distances: [B, n_s, n_t] from `layer_distances`.
    tutor_map: n_s teacher-layer indices, one per student layer.

  Returns:
    [B] per-example loss; equal to `cross_layer_loss` with one-hot tutor weights.

  Raises:
    ValueError: if the map's length or an index does not fit the distance tensor.
  """
  n_s, n_t = distances.shape[1], distances.shape[2]
  tutor_map = [int(j) for j in tutor_map]
  if n_s is not None and len(tutor_map) != n_s:
    raise ValueError(f"tutor_map has {len(tutor_map)} entries but there are {n_s} student layers")
  # one_hot silently gives a zero row for an out-of-range index: fail loudly instead.
  bad = [j for j in tutor_map if j < 0 or (n_t is not None and j >= n_t)]
  if bad:
    raise ValueError(f"tutor_map indices {bad} are outside [0, {n_t})")
  g = ops.one_hot(ops.convert_to_tensor(tutor_map, "int32"), ops.shape(distances)[2], dtype="float32")
  return cross_layer_loss(distances, g)


def tutor_weights(tutor_logits, tau, seed=None, mode: str = "gumbel"):
  """Tutor weights g [n_s, n_t] from the tutor logits phi.

  Args:
    tutor_logits: [n_s, n_t] logits phi.
    tau: temperature; used by "gumbel", "gumbel_hard" and "softmax" (softmax(phi / tau)).
    seed: `keras.random.SeedGenerator` or int, for the Gumbel modes.
    mode: "gumbel" (relaxed sample, search), "gumbel_hard" (straight-through one-hot),
      "softmax" (deterministic relaxation) or "argmax" (one-hot, no gradient; deriving the map).

  Returns:
    [n_s, n_t] float32 tensor whose rows sum to 1.

  Raises:
    ValueError: for an unknown mode.
  """
  logits = ops.cast(tutor_logits, "float32")
  if mode == "gumbel":
    return gumbel_softmax(logits, tau, seed, hard=False)
  if mode == "gumbel_hard":
    return gumbel_softmax(logits, tau, seed, hard=True)
  if mode == "softmax":
    return ops.softmax(logits / tau, axis=-1)
  if mode == "argmax":
    return ops.one_hot(ops.argmax(logits, axis=-1), ops.shape(logits)[-1], dtype="float32")
  raise ValueError(f"unknown tutor weight mode {mode!r}; expected one of {TUTOR_MODES}")


def cross_entropy(labels, logits):
  """Sparse softmax cross-entropy from logits, per example.

  Args:
    labels: [B] or [B, 1] integer class ids.
    logits: [B, K] logits.

  Returns:
    [B] float32 tensor.
  """
  labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
  return ops.sparse_categorical_crossentropy(labels, ops.cast(logits, "float32"), from_logits=True)


def kd_kl(teacher_logits, student_logits, temperature: float = 1.0):
  """Hinton's distillation term: T^2 * KL(softmax(t / T) || softmax(s / T)), per example.

  Args:
    teacher_logits: [B, K].
    student_logits: [B, K].
    temperature: T > 0; the T^2 factor keeps gradient magnitudes comparable across T.

  Returns:
    [B] float32 tensor, >= 0.
  """
  t = ops.cast(teacher_logits, "float32") / temperature
  s = ops.cast(student_logits, "float32") / temperature
  log_p_t = ops.log_softmax(t, axis=-1)
  log_p_s = ops.log_softmax(s, axis=-1)
  kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
  # KL >= 0 in exact arithmetic; clamp the -1e-8 rounding noise of near-identical logits.
  return ops.maximum(kl, 0.0) * (temperature * temperature)


def _num_replicas():
  """Replicas that will sum this step's gradients (1 outside any strategy)."""
  ctx = tf.distribute.get_replica_context()
  if ctx is not None:
    return ctx.num_replicas_in_sync
  # Cross-replica context (inside strategy.scope() but not strategy.run).
  return tf.distribute.get_strategy().num_replicas_in_sync


def replica_mean(per_example, global_batch_size: Optional[int] = None):
  """Sum of a per-example loss over the local batch divided by the GLOBAL batch size.

  Keras and tf.distribute SUM gradients over replicas, so dividing by the global batch gives the
  same update on 1 or N replicas (docs/keras_notes.md note 5). The value is the replica's share of the
  global mean: reduce logged values with SUM over replicas (or multiply by the replica count).

  Args:
    per_example: [B_local] (or [B_local, ...], all elements summed) loss values.
    global_batch_size: the global batch; default local batch x replicas in sync, which is exact
      when every replica gets the same number of examples.

  Returns:
    Scalar float32 tensor.
  """
  per_example = ops.cast(per_example, "float32")
  if global_batch_size is None:
    local = ops.cast(ops.shape(per_example)[0], "float32")
    global_batch_size = local * float(_num_replicas())
  # divide_no_nan: a replica with an empty final partial batch contributes 0, not NaN.
  return tf.math.divide_no_nan(ops.sum(per_example), ops.cast(global_batch_size, "float32"))


def entropy(probs, axis: int = -1):
  """Entropy in nats of distributions along `axis` (0 log 0 = 0), for logging width/tutor choices.

  Args:
    probs: tensor of probabilities summing to 1 along `axis`.
    axis: the distribution axis.

  Returns:
    Tensor with `axis` removed.
  """
  p = ops.cast(probs, "float32")
  # p * log(max(p, tiny)) is exactly 0 at p == 0, without a NaN gradient from log(0).
  return -ops.sum(p * ops.log(ops.maximum(p, 1e-30)), axis=axis)
