"""Benchmark: cost of the cross-layer loss as student and teacher layer counts grow.

    python scripts/bench_cl_loss.py [--spaces=s3,s5,s7,s9,s18] [--teachers=resnet18,wrn34_10] \
        [--teacher_width=1] [--batch_size=128] [--repeats=3] [--out=runs/bench/cl_loss.json]

For every (search space, teacher) pair, on random CIFAR-shaped data (32x32x3, 10 classes):

- search step: `SearchModel.train_step` in one `tf.function` (the whole bilevel step);
- cl_isolated: the student taps' energies (`losses.masked_tap`), the teacher taps' energies
  (`losses.channel_energy`), `losses.tutor_weights` + `losses.layer_distances_from_energies` +
  `losses.cross_layer_loss` and the gradient of that loss w.r.t. every student tap and the tutor
  logits, for both batches of a step, in one `tf.function`, fed the real student taps (supernet
  forward) and teacher taps (teacher inference) of the step's two batches. This is the work the
  cross-layer loss adds to a step: the energy maps (one channel reduction per tap), their bilinear resize to
  the grid and L2 normalisation, the n_s x n_t distance einsum and the backward pass into the taps. Each gradient
  is read out with one reduce_sum (the real step instead adds it into the backward flow, a similar
  pass over the tap).
- ablation (configs in --ablation, default s7:resnet18): the same search step traced with
  `losses.layer_distances_from_energies` / `losses.cross_layer_loss` patched to zeros; the CL share is then
  (step - step without CL) / step, a cross-check of the isolated number inside the real graph.

Teachers: ResNet-18 at full width (17 conv taps: 32x32 x5, 16x16 x4, 8x8 x4, 4x4 x4) and WRN-34-k at
the real depth 34 (31 conv taps: 32x32 x11, 16x16 x10, 8x8 x10) with widen factor k = --teacher_width
(default 1: WRN-34-10 itself costs ~12x ResNet-18 per image, too slow for a CPU sweep). The number
and spatial sizes of the taps are those of WRN-34-10; the teacher-map part of the loss is linear in
the channel count, so for WRN the script also times `cl_isolated` on random teacher activations of
the real WRN-34-10 tap shapes (--full_width, default 10), times the widen-10 teacher's inference, and
estimates the fraction for a real WRN-34-10 step: (cl at full shapes) / (measured step - widen-k
teacher inference + widen-10 teacher inference - cl at widen k + cl at full shapes).

Target: cl / step < 10% for every pair. The default sweep (10 pairs) spends most of its time
tracing the steps: about 25-35 minutes on 2 shared CPU cores; select pairs with --spaces/--teachers.
"""

import collections
import contextlib
import gc
import statistics
import time

import bench_common as bc

WRN_ARCHS = ("wrn34_10", "wrn28_10", "wide_resnet")


def parse_args(argv=None):
  p = bc.base_parser("cl_loss", __doc__.split("\n\n")[0])
  p.add_argument("--spaces", default=None, help="comma-separated search spaces (default s3,s5,s7,s9,s18)")
  p.add_argument("--teachers", default=None,
                 help="comma-separated built-in teacher archs (default resnet18,wrn34_10; wide_resnet "
                      "takes --wrn_depth)")
  p.add_argument("--wrn_depth", type=int, default=None,
                 help="depth of a `wide_resnet` teacher (default 34; 10 under --tiny)")
  p.add_argument("--teacher_width", type=int, default=None,
                 help="widen factor of WRN teachers (default 1; depth stays 34); ResNet-18 stays full width")
  p.add_argument("--full_width", type=int, default=None,
                 help="for WRN teachers, also time the loss on the tap shapes of this widen factor "
                      "(default 10; 0 = off)")
  p.add_argument("--batch_size", type=int, default=None, help="examples per batch and per side (default 128)")
  p.add_argument("--cl_grid", type=int, default=8, help="attention grid (SearchConfig.cl_grid)")
  p.add_argument("--ablation", default=None,
                 help="space:teacher pairs to also time with the loss patched out, comma-separated; "
                      "'all' or 'none' (default s7:resnet18)")
  p.add_argument("--target", type=float, default=0.10, help="target for cl / step (strictly below)")
  return bc.parse(p, argv)


@contextlib.contextmanager
def cross_layer_loss_removed():
  """Patches `rnascl_tf.distill.losses` so a step traced inside computes no attention maps or distances.

  The tutor weights still reach the loss through a zero term, so the architecture optimiser sees
  the same variables with (zero) gradients.
  """
  import tensorflow as tf

  from rnascl_tf.distill import losses

  saved = losses.layer_distances_from_energies, losses.cross_layer_loss

  def no_distances(student_energies, teacher_energies, grid):
    del grid
    return tf.zeros([tf.shape(student_energies[0])[0], len(student_energies), len(teacher_energies)], tf.float32)

  def no_loss(distances, tutor_weights):
    return tf.zeros([tf.shape(distances)[0]], tf.float32) + 0.0 * tf.reduce_sum(tutor_weights)

  losses.layer_distances_from_energies, losses.cross_layer_loss = no_distances, no_loss
  try:
    yield
  finally:
    losses.layer_distances_from_energies, losses.cross_layer_loss = saved


def make_cl_isolated(model, grid: int):
  """tf.function-able: the cross-layer loss and its gradient for both batches of a step."""
  import tensorflow as tf

  from rnascl_tf.distill import losses

  tutor = model.tutor_logits

  def cl_both(s_a, t_a, s_w, t_w):
    outs = []
    for s, t in ((s_a, t_a), (s_w, t_w)):
      with tf.GradientTape() as tape:
        tape.watch(s)
        # As in the step: student energies from masked_tap, teacher energies right after the teacher.
        s_e = [losses.masked_tap(a)[1] for a in s]
        t_e = [losses.channel_energy(a) for a in t]
        g = losses.tutor_weights(tutor, model.supernet.temperature, model.tutor_seed, mode="gumbel")
        cl = losses.replica_mean(losses.cross_layer_loss(losses.layer_distances_from_energies(s_e, t_e, grid), g))
      grads = tape.gradient(cl, list(s) + [tutor])
      outs.append(cl)
      outs.extend(tf.reduce_sum(gr) for gr in grads)
    return tf.add_n(outs)

  return cl_both


def size_histogram(shapes) -> dict:
  counts = collections.Counter(f"{int(s[0])}x{int(s[1])}" for s in shapes)
  return dict(sorted(counts.items(), key=lambda kv: -int(kv[0].split("x")[0])))


def random_acts(shapes, batch: int, seed: int):
  import tensorflow as tf

  gen = tf.random.Generator.from_seed(seed)
  return [tf.nn.relu(gen.normal((batch,) + tuple(int(d) for d in s))) for s in shapes]


def main(argv=None) -> dict:
  args = parse_args(argv)
  started = time.time()
  device = bc.device_info()
  import tensorflow as tf

  from rnascl_tf.configs import DistillConfig, SearchConfig

  tiny = args.tiny
  spaces = (args.spaces or ("tiny" if tiny else "s3,s5,s7,s9,s18")).split(",")
  teachers = (args.teachers or ("wide_resnet" if tiny else "resnet18,wrn34_10")).split(",")
  wrn_depth = bc.pick(args, "wrn_depth", 34, 10)
  batch = bc.pick(args, "batch_size", 128, 4)
  repeats = bc.pick(args, "repeats", 3, 1)
  warmup = bc.pick(args, "warmup", 1, 0)
  widen = bc.pick(args, "teacher_width", 1, 1)
  full_width = bc.pick(args, "full_width", 10, 2)
  ablation = args.ablation or ("tiny:wide_resnet" if tiny else "s7:resnet18")
  shape = (16, 16, 3) if tiny else bc.CIFAR_SHAPE
  cfg = SearchConfig(distill=DistillConfig(cl_grid=args.cl_grid))
  data = bc.random_batches(batch, input_shape=shape, seed=args.seed)
  (x_w, _), (x_a, _) = data

  configs, targets = [], {}
  for arch in teachers:
    is_wrn = arch in WRN_ARCHS
    width = widen if is_wrn else (0.0625 if tiny else None)
    _, taps, tdesc = bc.build_teacher(arch, width, input_shape=shape, depth=wrn_depth)
    bc.log(f"teacher {arch} ({tdesc['built_as']} {tdesc['knobs']}): {tdesc['taps']} taps, {tdesc['params']} params")
    t_a, t_w = taps(x_a)[1], taps(x_w)[1]
    teacher_fn = bc.step_function(lambda d, taps=taps: (taps(d[0][0])[0], taps(d[1][0])[0]), args.jit_compile)
    teacher_info = {"teacher": tdesc,
                    "teacher_inference_both_batches": bc.time_interleaved(
                        {"t": lambda: teacher_fn(data)}, repeats=repeats, warmup=1)["t"]}
    full = None
    if is_wrn and full_width and full_width != widen:
      # The real WRN-34-10 tap shapes: random post-ReLU activations stand in for its taps.
      full_model, full_taps, full_desc = bc.build_teacher(arch, full_width, input_shape=shape, depth=wrn_depth)
      full_fn = bc.step_function(lambda d, taps=full_taps: (taps(d[0][0])[0], taps(d[1][0])[0]), args.jit_compile)
      bc.log(f"timing the widen-{full_width} teacher's inference ({full_desc['params']} params)")
      full = {"teacher": full_desc,
              "teacher_inference_both_batches": bc.time_interleaved(
                  {"t": lambda: full_fn(data)}, repeats=max(1, min(repeats, 2)), warmup=1)["t"],
              "acts": random_acts(full_taps.output_shapes, batch, args.seed)}
      del full_model, full_taps, full_fn
      gc.collect()

    for space in spaces:
      name = f"{space}:{arch}"
      bc.log(f"== {name}")
      model = bc.build_search_model(space, taps, input_shape=shape, seed=args.seed, cfg=cfg)
      s_a = [tf.identity(v) for v in model.supernet.forward(x_a, training=True)["taps"]]
      s_w = [tf.identity(v) for v in model.supernet.forward(x_w, training=True)["taps"]]
      step = bc.step_function(bc.make_search_step(model), args.jit_compile)
      cl = bc.step_function(make_cl_isolated(model, args.cl_grid), args.jit_compile)
      fns = {"search_step": lambda: step(data), "cl_isolated": lambda: cl(s_a, t_a, s_w, t_w)}
      if full is not None:
        fns["cl_isolated_full_width_taps"] = lambda: cl(s_a, full["acts"], s_w, full["acts"])
      do_ablation = ablation == "all" or name in ablation.split(",")
      if do_ablation:
        ablated = bc.step_function(bc.make_search_step(model), args.jit_compile)
        with cross_layer_loss_removed():
          ablated.get_concrete_function(data)  # Traced (and cached) while the loss is patched out.
        fns["search_step_without_cl"] = lambda: ablated(data)
      first = {}
      for key, fn in fns.items():
        first[key] = round(bc.timed(fn), 2)  # First call: trace + compile + one run.
        bc.log(f"  first call of {key}: {first[key]:.1f} s")
      timings = bc.time_interleaved(fns, repeats=repeats, warmup=warmup, log=bc.log)
      frac = bc.ratio(timings["cl_isolated"], timings["search_step"])
      entry = {
          "space": space, "teacher": arch, "student_layers": model.num_student_layers,
          "teacher_layers": model.num_teacher_layers,
          "student_tap_sizes": size_histogram([v.shape[1:3] for v in s_a]),
          "teacher_tap_sizes": size_histogram(taps.output_shapes),
          "search_step": timings["search_step"], "cl_isolated": timings["cl_isolated"],
          "cl_fraction": frac, "first_call_seconds": first,
      }
      if do_ablation:
        without = timings["search_step_without_cl"]
        shares = [(a - b) / a for a, b in zip(timings["search_step"]["samples_s"], without["samples_s"])]
        entry["ablation"] = {
            "search_step_without_cl": without,
            "cl_fraction_median_of_rounds": statistics.median(shares),
            "cl_fraction_of_medians": 1.0 - without["median_s"] / timings["search_step"]["median_s"],
        }
      if full is not None:
        cl_full = timings["cl_isolated_full_width_taps"]["median_s"]
        full_inference = full["teacher_inference_both_batches"]["median_s"]
        est_step = (timings["search_step"]["median_s"]
                    - teacher_info["teacher_inference_both_batches"]["median_s"]
                    + full_inference - timings["cl_isolated"]["median_s"] + cl_full)
        # The full-width step holds at least its full-width teacher inference and loss. On tiny or
        # loaded runs the separately timed small-teacher inference can exceed its share of the
        # measured step, and the difference above would undercount (even below zero).
        est_step = max(est_step, full_inference + cl_full)
        entry["full_width_taps"] = {
            "widen_factor": full_width, "teacher_tap_shapes": full["teacher"]["tap_shapes"],
            "cl_isolated": timings["cl_isolated_full_width_taps"],
            "cl_fraction_of_measured_step": cl_full / timings["search_step"]["median_s"],
            "estimated_full_width_step_s": est_step,
            "cl_fraction_of_estimated_full_width_step": cl_full / est_step,
        }
      configs.append(entry)
      targets[f"cl_fraction/{name}"] = bc.target(frac["median_of_round_ratios"], args.target, "<",
                                                 f"cl_isolated / search_step, {name}, batch {batch}")
      bc.log(f"  {name}: n_s={entry['student_layers']} n_t={entry['teacher_layers']} step "
             f"{timings['search_step']['median_s']:.3f} s, cl {timings['cl_isolated']['median_s']:.3f} s "
             f"-> {100 * frac['median_of_round_ratios']:.1f}%")
      del model, step, cl, fns, s_a, s_w
      if do_ablation:
        del ablated
      gc.collect()
    teacher_info["full_width"] = None if full is None else {
        k: v for k, v in full.items() if k != "acts"}
    configs.append({"teacher_summary": arch, **teacher_info})
    del taps, t_a, t_w, full
    gc.collect()

  settings = {
      "spaces": spaces, "teachers": teachers, "wrn_widen_factor": widen, "full_width_check": full_width,
      "wide_resnet_depth": wrn_depth,
      "batch_size": batch, "input_shape": list(shape), "cl_grid": args.cl_grid, "repeats": repeats,
      "warmup_rounds": warmup, "jit_compile": args.jit_compile, "ablation": ablation, "seed": args.seed,
      "resnet18_width": 0.0625 if tiny else 1.0,  # Tiny runs only a WRN.
  }
  method = (
      "Per (space, teacher): search_step = SearchModel.train_step in a tf.function; cl_isolated = "
      "masked_tap / channel_energy + tutor_weights + layer_distances_from_energies + cross_layer_loss + tape.gradient w.r.t. the student taps and "
      "the tutor logits, for the arch batch and the weight batch, in one tf.function fed the real "
      "student taps (supernet forward, training mode) and teacher taps (teacher inference); each "
      "gradient is read out with one reduce_sum. Candidates run in turns (interleaved rounds), "
      "median over rounds of cl_isolated / search_step is cl_fraction. Ablation: the same step traced "
      "with layer_distances_from_energies/cross_layer_loss patched to zeros; its share = (step - ablated) / step. WRN "
      "teachers run at depth 34 with widen factor wrn_widen_factor (same 31 taps and spatial sizes as "
      "WRN-34-10, fewer channels); full_width_taps repeats cl_isolated with random ReLU activations of "
      "the widen-full_width tap shapes and estimates the step of a real widen-full_width teacher from "
      "its measured inference time. Random data, untrained models.")
  results = {"configs": [c for c in configs if "space" in c],
             "teachers": [c for c in configs if "teacher_summary" in c]}
  payload = bc.write_result(args, "cl_loss", settings, results, targets, method, started, device)
  bc.report(payload, args.out)
  return payload


if __name__ == "__main__":
  main()
