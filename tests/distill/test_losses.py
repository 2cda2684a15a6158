"""Tests of rnascl_tf.distill.losses against hand (numpy) computations, a toy tutor search, and replica scaling."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from rnascl_tf.distill import losses
from rnascl_tf.distill.keras_graph import in_xla_context


# ---------------------------------------------------------------------------------------------
# numpy references


def _np_bilinear_matrix(n_in, n_out):
  """[n_out, n_in] matrix of 1-D bilinear resizing with half-pixel centres and edge clamping."""
  m = np.zeros((n_out, n_in), np.float64)
  for o in range(n_out):
    x = (o + 0.5) * n_in / n_out - 0.5
    x0 = math.floor(x)
    frac = x - x0
    m[o, min(max(x0, 0), n_in - 1)] += 1.0 - frac
    m[o, min(max(x0 + 1, 0), n_in - 1)] += frac
  return m


def _np_attention(act, grid):
  """Hand attention maps: [B,H,W,C] -> [B, grid*grid]."""
  act = np.asarray(act, np.float64)
  a = np.sum(act ** 2, axis=-1)
  mh = _np_bilinear_matrix(act.shape[1], grid)
  mw = _np_bilinear_matrix(act.shape[2], grid)
  a = np.einsum("gh,bhw,kw->bgk", mh, a, mw).reshape(act.shape[0], -1)
  norm = np.linalg.norm(a, axis=-1, keepdims=True)
  return a / np.maximum(norm, 1e-12)


def _np_distances(student, teacher, grid):
  """Double Python loop of ||a_s - a_t||^2 per example: [B, n_s, n_t]."""
  b = student[0].shape[0]
  out = np.zeros((b, len(student), len(teacher)))
  for i, s in enumerate(student):
    for j, t in enumerate(teacher):
      out[:, i, j] = np.sum((_np_attention(s, grid) - _np_attention(t, grid)) ** 2, axis=-1)
  return out


def _acts(rng, shapes):
  # ReLU-like (non-negative, sparse) activations, as after BN + ReLU.
  return [np.maximum(rng.standard_normal(s), 0.0).astype("float32") for s in shapes]


STUDENT_SHAPES = [(3, 8, 8, 3), (3, 4, 4, 5)]
TEACHER_SHAPES = [(3, 16, 16, 2), (3, 8, 8, 7), (3, 2, 2, 4)]


# ---------------------------------------------------------------------------------------------
# attention_maps


def test_attention_maps_identity_grid_matches_hand():
  act = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype("float32")
  a = np.sum(act.astype(np.float64) ** 2, axis=-1).reshape(2, -1)
  expected = a / np.linalg.norm(a, axis=-1, keepdims=True)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.attention_maps(act, 4)), expected, atol=1e-6)


@pytest.mark.parametrize("shape,grid", [((2, 4, 4, 3), 2), ((2, 3, 5, 2), 4), ((2, 8, 8, 1), 3)])
def test_attention_maps_resized_match_hand_bilinear(shape, grid):
  act = np.random.default_rng(1).standard_normal(shape).astype("float32")
  got = ops.convert_to_numpy(losses.attention_maps(act, grid))
  assert got.shape == (shape[0], grid * grid)
  np.testing.assert_allclose(got, _np_attention(act, grid), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("n_in,n_out", [(32, 8), (16, 8), (4, 8), (5, 3), (3, 7), (1, 4), (8, 8)])
def test_bilinear_matrix_is_tensorflows_resize(n_in, n_out):
  """The resize runs as a fixed matrix per axis; it must be TF's own bilinear resize (half-pixel
  centres, no antialiasing), down- and upsampling, and TF's resize op must agree with it."""
  x = np.random.default_rng(12).standard_normal((2, n_in, n_in + 1, 3)).astype("float32")
  want = tf.image.resize(x, (n_out, n_out), method="bilinear", antialias=False).numpy()
  mh, mw = losses._bilinear_matrix(n_in, n_out), losses._bilinear_matrix(n_in + 1, n_out)
  np.testing.assert_allclose(np.einsum("gh,bhwk,pw->bgpk", mh, x, mw), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mh, _np_bilinear_matrix(n_in, n_out), atol=1e-7)
  np.testing.assert_allclose(mh.sum(axis=1), 1.0, atol=1e-6)  # Each output is a convex combination.
  # The library path, uncompiled (TF's op) and under XLA (the matrices).
  for jit in (False, True):
    fn = tf.function(lambda t: losses._resized(t, n_out), jit_compile=jit)
    np.testing.assert_allclose(ops.convert_to_numpy(fn(x)), want, rtol=1e-5, atol=1e-5)
    op_types = {op.type for op in fn.get_concrete_function(x).graph.get_operations()}
    assert ("ResizeBilinear" in op_types) is (not jit)  # XLA: the matrices, not the resize op.


def test_attention_maps_downsample_by_two_is_average_pooling():
  # Half-pixel bilinear 4 -> 2 averages 2x2 blocks: an independent hand check of the resize path.
  act = np.random.default_rng(2).standard_normal((1, 4, 4, 2)).astype("float32")
  a = np.sum(act.astype(np.float64) ** 2, axis=-1)[0]
  pooled = a.reshape(2, 2, 2, 2).mean(axis=(1, 3)).reshape(-1)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.attention_maps(act, 2))[0],
                             pooled / np.linalg.norm(pooled), atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_attention_maps_zero_activation_gives_zeros_and_finite_gradient(jit):
  act = np.random.default_rng(3).standard_normal((2, 4, 4, 3)).astype("float32")
  act[0] = 0.0
  x = tf.Variable(act)
  teacher = [tf.constant(np.abs(act[::-1]) + 1.0)]

  # XLA is where a naive max(norm, eps) gives a NaN gradient, so check both code paths.
  @tf.function(jit_compile=jit)
  def fn():
    with tf.GradientTape() as tape:
      maps = losses.attention_maps(x, 2)
      loss = ops.sum(losses.cross_layer_loss(losses.layer_distances([x], teacher, 2), [[1.0]]))
    return maps, loss, tape.gradient(loss, x)

  maps, loss, grad = [ops.convert_to_numpy(v) for v in fn()]
  np.testing.assert_array_equal(maps[0], 0.0)
  np.testing.assert_allclose(np.linalg.norm(maps[1]), 1.0, atol=1e-6)
  assert np.all(np.isfinite(grad))
  # Exact distance of a zero map to a unit map is 1 (not the 2 of the unit-vector shortcut).
  np.testing.assert_allclose(float(loss), 1.0 + _np_distances([act[1:]], [teacher[0].numpy()[1:]], 2).sum(),
                             atol=1e-5)


# ---------------------------------------------------------------------------------------------
# layer_distances and the cross-layer loss


def test_layer_distances_match_double_loop_for_mixed_shapes():
  rng = np.random.default_rng(4)
  student, teacher = _acts(rng, STUDENT_SHAPES), _acts(rng, TEACHER_SHAPES)
  got = ops.convert_to_numpy(losses.layer_distances(student, teacher, 4))
  assert got.shape == (3, 2, 3)
  np.testing.assert_allclose(got, _np_distances(student, teacher, 4), atol=1e-5)


@pytest.mark.parametrize("spatial", [
    pytest.param(None, id="known_sizes"),
    pytest.param([None, None], id="unknown_sizes"),
])
def test_layer_distances_keep_tap_order_when_sizes_interleave(spatial):
  """Maps of one size are resized together (one op per size); the result must still be in the taps'
  order, with the same values and gradients as one map at a time."""
  rng = np.random.default_rng(11)
  shapes = [(2, 8, 8, 3), (2, 4, 4, 2), (2, 8, 8, 1), (2, 2, 2, 4), (2, 4, 4, 3)]
  student, teacher = _acts(rng, shapes), _acts(rng, [(2, 4, 4, 2), (2, 8, 8, 5)])
  sig = [tf.TensorSpec([None] + (spatial or list(sh[1:3])) + [sh[3]]) for sh in shapes]
  weights = np.arange(1.0, 11.0, dtype="float32").reshape((1, 5, 2))  # A loss that tells pairs apart.

  @tf.function(input_signature=sig)
  def grouped(*acts):
    with tf.GradientTape() as tape:
      tape.watch(acts)
      d = losses.layer_distances(list(acts), teacher, 4)
      loss = ops.sum(d * weights)
    return d, tape.gradient(loss, acts)

  def one_at_a_time(acts):
    with tf.GradientTape() as tape:
      tape.watch(acts)
      s = ops.stack([losses.attention_maps(a, 4) for a in acts], axis=1)
      t = ops.stack([losses.attention_maps(a, 4) for a in teacher], axis=1)
      d = ops.sum(ops.square(s[:, :, None] - t[:, None]), axis=-1)
      loss = ops.sum(d * weights)
    return d, tape.gradient(loss, acts)

  d, grads = grouped(*student)
  want_d, want_grads = one_at_a_time([tf.constant(a) for a in student])
  np.testing.assert_allclose(d.numpy(), want_d.numpy(), atol=1e-5)
  np.testing.assert_allclose(d.numpy(), _np_distances(student, teacher, 4), atol=1e-5)
  for g, want in zip(grads, want_grads):
    np.testing.assert_allclose(g.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_layer_distances_identical_maps_symmetric_zero_diagonal():
  acts = _acts(np.random.default_rng(5), [(2, 8, 8, 3), (2, 4, 4, 2), (2, 4, 4, 6)])
  d = ops.convert_to_numpy(losses.layer_distances(acts, [3.0 * a for a in acts], 4))
  np.testing.assert_allclose(np.diagonal(d, axis1=1, axis2=2), 0.0, atol=1e-6)
  np.testing.assert_allclose(d, np.transpose(d, (0, 2, 1)), atol=1e-6)
  assert np.all(d >= 0.0) and d[:, 0, 1].min() > 1e-3


def test_layer_distances_under_tf_function_with_unknown_batch():
  fn = tf.function(lambda s, t: losses.layer_distances([s], [t], 2),
                   input_signature=[tf.TensorSpec([None, 4, 4, 2]), tf.TensorSpec([None, 2, 2, 3])])
  s, t = _acts(np.random.default_rng(6), [(2, 4, 4, 2), (2, 2, 2, 3)])
  np.testing.assert_allclose(fn(s, t).numpy(), _np_distances([s], [t], 2), atol=1e-5)


@pytest.mark.parametrize("j", [0, 2])
def test_one_hot_tutor_equals_hand_distance_to_layer_j(j):
  rng = np.random.default_rng(7)
  student, teacher = _acts(rng, STUDENT_SHAPES), _acts(rng, TEACHER_SHAPES)
  hand = _np_distances(student, teacher, 4)
  d = losses.layer_distances(student, teacher, 4)
  g = np.zeros((2, 3), "float32")
  g[:, j] = 1.0
  expected = hand[:, :, j].mean(axis=1)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.cross_layer_loss(d, g)), expected, atol=1e-5)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.fixed_tutor_loss(d, [j, j])), expected, atol=1e-5)
  # Batch mean = the D[i, j] of docs/method.md section 7, averaged over student layers.
  np.testing.assert_allclose(float(losses.replica_mean(losses.fixed_tutor_loss(d, [j, j]))),
                             hand[:, :, j].mean(), atol=1e-5)


def test_fixed_tutor_loss_mixed_map_and_validation():
  rng = np.random.default_rng(8)
  student, teacher = _acts(rng, STUDENT_SHAPES), _acts(rng, TEACHER_SHAPES)
  hand = _np_distances(student, teacher, 4)
  d = losses.layer_distances(student, teacher, 4)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.fixed_tutor_loss(d, [2, 0])),
                             (hand[:, 0, 2] + hand[:, 1, 0]) / 2, atol=1e-5)
  with pytest.raises(ValueError, match="entries"):
    losses.fixed_tutor_loss(d, [0])
  with pytest.raises(ValueError, match="outside"):
    losses.fixed_tutor_loss(d, [0, 3])


@pytest.mark.parametrize("mode", ["softmax", "gumbel", "gumbel_hard"])
def test_tutor_logits_get_nonzero_gradient(mode):
  rng = np.random.default_rng(9)
  student, teacher = _acts(rng, STUDENT_SHAPES), _acts(rng, TEACHER_SHAPES)
  d = losses.layer_distances(student, teacher, 4)
  logits = keras.Variable(np.zeros((2, 3), "float32"))
  with tf.GradientTape() as tape:
    g = losses.tutor_weights(logits, 1.0, keras.random.SeedGenerator(0), mode=mode)
    loss = losses.replica_mean(losses.cross_layer_loss(d, g))
  grad = ops.convert_to_numpy(tape.gradient(loss, logits.value))
  assert np.abs(grad).max() > 1e-4
  if mode == "softmax":
    # Linear loss through softmax: dL/dphi_ij = g_ij (D_ij - sum_k g_ik D_ik) / n_s.
    dbar = _np_distances(student, teacher, 4).mean(axis=0)
    expected = (dbar - dbar.mean(axis=1, keepdims=True)) / 3 / 2
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_tutor_weights_modes():
  logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]], "float32")
  for mode in losses.TUTOR_MODES:
    g = ops.convert_to_numpy(losses.tutor_weights(logits, 0.5, keras.random.SeedGenerator(1), mode))
    np.testing.assert_allclose(g.sum(axis=-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(ops.convert_to_numpy(losses.tutor_weights(logits, 1.0, mode="argmax")),
                                [[0, 1, 0], [1, 0, 0]])
  soft = ops.convert_to_numpy(losses.tutor_weights(logits, 0.5, mode="softmax"))
  e = np.exp(logits / 0.5)
  np.testing.assert_allclose(soft, e / e.sum(axis=-1, keepdims=True), atol=1e-6)
  with pytest.raises(ValueError, match="unknown"):
    losses.tutor_weights(logits, 1.0, mode="mean")


def test_toy_search_finds_the_copied_teacher_layer():
  # Teacher layer j*(i) is a scaled copy of student layer i; teacher layer 1 is unrelated.
  rng = np.random.default_rng(10)
  student = _acts(rng, [(4, 8, 8, 4), (4, 4, 4, 6), (4, 8, 8, 2)])
  target = {0: 2, 1: 0, 2: 3}
  teacher = [None] * 4
  for i, j in target.items():
    teacher[j] = 2.5 * student[i]
  teacher[1] = _acts(rng, [(4, 4, 4, 3)])[0]
  d = losses.layer_distances(student, teacher, 4)
  logits = keras.Variable(np.zeros((3, 4), "float32"))
  opt = keras.optimizers.Adam(0.1)
  seed = keras.random.SeedGenerator(123)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = losses.replica_mean(losses.cross_layer_loss(d, losses.tutor_weights(logits, 1.0, seed)))
    opt.apply([tape.gradient(loss, logits.value)], [logits])
    return loss

  for _ in range(100):
    step()
  probs = ops.convert_to_numpy(ops.softmax(logits.value, axis=-1))
  for i, j in target.items():
    assert np.argmax(probs[i]) == j and probs[i, j] > 0.9, probs


# ---------------------------------------------------------------------------------------------
# replica scaling (docs/keras_notes.md note 5)


def test_replica_mean_outside_strategy_is_batch_mean():
  x = np.array([1.0, 2.0, 6.0], "float32")
  assert float(losses.replica_mean(x)) == pytest.approx(3.0)
  assert float(losses.replica_mean(x, global_batch_size=6)) == pytest.approx(1.5)
  assert float(losses.replica_mean(np.zeros((0,), "float32"))) == 0.0


def _one_sgd_step(strategy, reduce_fn, x, y, kernel):
  """Loss (SUM over replicas) and updated kernel after one SGD(lr=1) step of a tiny Dense layer."""
  with strategy.scope():
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(kernel),
                               bias_initializer="zeros")
    dense.build((None, x.shape[1]))
    opt = keras.optimizers.SGD(1.0)
    opt.build(dense.trainable_variables)
  data = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
  batch = next(iter(strategy.experimental_distribute_dataset(data)))

  def replica_step(xb, yb):
    with tf.GradientTape() as tape:
      # A CE + KD-like per-example loss through the project's own functions.
      logits = dense(xb)
      per_example = losses.cross_entropy(yb, logits) + losses.kd_kl(ops.ones_like(logits), logits, 2.0)
      loss = reduce_fn(per_example)
    grads = tape.gradient(loss, dense.trainable_variables)
    opt.apply(grads, dense.trainable_variables)
    return loss

  @tf.function
  def step(b):
    per_replica = strategy.run(replica_step, args=b)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  loss = float(step(batch))
  return loss, ops.convert_to_numpy(dense.kernel)


def test_replica_scaling_same_loss_and_update_on_one_and_two_replicas():
  if len(tf.config.list_logical_devices("CPU")) < 2:
    pytest.skip("needs the two logical CPU devices of conftest.py")
  rng = np.random.default_rng(11)
  x = rng.standard_normal((8, 3)).astype("float32")
  y = rng.integers(0, 2, size=(8,)).astype("int32")
  kernel = rng.standard_normal((3, 2)).astype("float32")
  mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  assert mirrored.num_replicas_in_sync == 2

  loss_1, kernel_1 = _one_sgd_step(tf.distribute.get_strategy(), losses.replica_mean, x, y, kernel)
  loss_2, kernel_2 = _one_sgd_step(mirrored, losses.replica_mean, x, y, kernel)
  assert loss_2 == pytest.approx(loss_1, abs=1e-6)
  assert np.abs(kernel_1 - kernel).max() > 1e-3  # the step did move the weights
  np.testing.assert_allclose(kernel_2, kernel_1, rtol=0, atol=1e-6)

  # Negative control: a plain per-replica mean doubles the update on 2 replicas, which is the bug
  # this scaling prevents; it shows the test above is sensitive to the scaling.
  _, naive_2 = _one_sgd_step(mirrored, ops.mean, x, y, kernel)
  np.testing.assert_allclose(naive_2 - kernel, 2.0 * (kernel_1 - kernel), atol=1e-5)

  # Cross-replica context (in scope, outside run) divides by the strategy's replica count.
  with mirrored.scope():
    assert float(losses.replica_mean(np.ones((4,), "float32"))) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# CE, KD and entropy


def test_kd_kl_zero_for_identical_nonnegative_and_matches_hand():
  rng = np.random.default_rng(12)
  t = rng.standard_normal((5, 4)).astype("float32") * 3
  s = rng.standard_normal((5, 4)).astype("float32") * 3
  np.testing.assert_allclose(ops.convert_to_numpy(losses.kd_kl(t, t, 2.0)), 0.0, atol=1e-6)

  def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

  for temp in (1.0, 3.0):
    p, q = softmax(t.astype(np.float64) / temp), softmax(s.astype(np.float64) / temp)
    expected = temp ** 2 * np.sum(p * np.log(p / q), axis=-1)
    got = ops.convert_to_numpy(losses.kd_kl(t, s, temp))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(got >= 0.0)


def test_cross_entropy_matches_keras_per_example():
  rng = np.random.default_rng(13)
  logits = rng.standard_normal((6, 5)).astype("float32")
  labels = rng.integers(0, 5, size=(6,))
  ref = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(labels, logits)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.cross_entropy(labels, logits)),
                             ops.convert_to_numpy(ref), atol=1e-6)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.cross_entropy(labels[:, None], logits)),
                             ops.convert_to_numpy(ref), atol=1e-6)


def test_entropy_uniform_and_one_hot():
  probs = np.array([[0.25] * 4, [0.0, 1.0, 0.0, 0.0]], "float32")
  np.testing.assert_allclose(ops.convert_to_numpy(losses.entropy(probs)), [math.log(4), 0.0], atol=1e-6)
  np.testing.assert_allclose(ops.convert_to_numpy(losses.entropy(probs.T, axis=0)), [math.log(4), 0.0],
                             atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Energy maps and the memory-lean student tap


def test_layer_distances_from_energies_equal_layer_distances():
  rng = np.random.default_rng(5)
  student, teacher = _acts(rng, STUDENT_SHAPES), _acts(rng, TEACHER_SHAPES)
  want = ops.convert_to_numpy(losses.layer_distances(student, teacher, 4))
  got = ops.convert_to_numpy(losses.layer_distances_from_energies(
      [losses.channel_energy(a) for a in student], [losses.channel_energy(a) for a in teacher], 4))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(got, _np_distances(student, teacher, 4), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked, keep", [(True, "masked"), (True, "unmasked"), (False, "masked")],
                         ids=["mask-keep_masked", "mask-keep_unmasked", "no_mask"])
@pytest.mark.parametrize("use", ["both", "energy_only", "value_only"])
@pytest.mark.parametrize("run", ["eager", "graph", "xla"])
def test_masked_tap_matches_autodiff_of_the_plain_form(masked, keep, use, run):
  """Same values and same gradients (w.r.t. the value and the mask) as autodiff of value * mask and
  its channel sum of squares, whichever of its two outputs the loss uses, eagerly, in a graph and
  XLA-compiled (the fused gradients and energy take other code paths in each)."""
  rng = np.random.default_rng(6)
  value = tf.constant(rng.standard_normal((3, 5, 5, 4)).astype("float32"))
  mask = tf.constant(rng.uniform(size=(4,)).astype("float32"))
  teacher = [losses.channel_energy(a) for a in _acts(rng, [(3, 4, 4, 6)])]

  def loss_and_grads(fused):
    with tf.GradientTape() as tape:
      tape.watch([value, mask])
      m = mask if masked else None
      if fused:
        out, energy = losses.masked_tap(value, m, keep=keep)
      else:
        out = value * mask if masked else value
        energy = tf.reduce_sum(tf.square(out), axis=-1, keepdims=True)
      terms = []
      if use in ("both", "energy_only"):
        terms.append(tf.reduce_sum(losses.layer_distances_from_energies([energy], teacher, 2)))
      if use in ("both", "value_only"):
        terms.append(tf.reduce_sum(tf.sin(out)))
      loss = tf.add_n(terms)
    grads = tape.gradient(loss, [value, mask] if masked else [value])
    return out, energy, loss, grads

  if run != "eager":
    loss_and_grads = tf.function(loss_and_grads, jit_compile=run == "xla")
  out_f, energy_f, loss_f, grads_f = loss_and_grads(True)
  out_p, energy_p, loss_p, grads_p = loss_and_grads(False)
  np.testing.assert_allclose(out_f.numpy(), out_p.numpy(), rtol=1e-6)
  np.testing.assert_allclose(energy_f.numpy(), energy_p.numpy(), rtol=1e-6)
  np.testing.assert_allclose(loss_f.numpy(), loss_p.numpy(), rtol=1e-6)
  for got, want in zip(grads_f, grads_p):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    assert np.any(got.numpy() != 0)


@pytest.mark.parametrize("run", ["eager", "graph", "xla"])
def test_channel_energy_is_the_channel_sum_of_squares_with_its_gradient(run):
  """Outside XLA the energy is one fused reduction with its own gradient: same value, gradient
  2 a g, finite for an all-zero activation (the reduction's own gradient would divide by zero)."""
  act = np.random.default_rng(4).standard_normal((2, 3, 3, 5)).astype("float32")
  act[1] = 0.0
  x = tf.constant(act)
  w = tf.constant(np.random.default_rng(5).standard_normal((2, 3, 3, 1)).astype("float32"))

  def energy_and_grad(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      e = losses.channel_energy(x)
      loss = tf.reduce_sum(e * w)
    return e, tape.gradient(loss, x), in_xla_context()

  if run != "eager":
    energy_and_grad = tf.function(energy_and_grad, jit_compile=run == "xla")
  e, g, in_xla = energy_and_grad(x)
  assert bool(in_xla) == (run == "xla")
  np.testing.assert_allclose(e.numpy(), np.sum(act ** 2, axis=-1, keepdims=True), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(g.numpy(), 2 * act * w.numpy(), rtol=1e-6, atol=1e-7)
  assert np.all(np.isfinite(g.numpy()))


def test_masked_tap_rejects_an_unknown_keep():
  with pytest.raises(ValueError, match="keep must be"):
    losses.masked_tap(tf.zeros((1, 2, 2, 1)), tf.ones((1,)), keep="both")


def test_masked_tap_under_xla_keeps_a_dead_tap_finite():
  value = tf.zeros((2, 4, 4, 3))
  teacher = [tf.ones((2, 4, 4, 1))]

  @tf.function(jit_compile=True)
  def grads(v):
    with tf.GradientTape() as tape:
      tape.watch(v)
      _, energy = losses.masked_tap(v, tf.ones((3,)))
      loss = tf.reduce_sum(losses.layer_distances_from_energies([energy], teacher, 2))
    return tape.gradient(loss, v)

  g = grads(value).numpy()
  assert np.all(np.isfinite(g)) and not np.any(g)
