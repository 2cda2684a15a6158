"""Benchmark: overhead of one bilevel RNAS-CL search step over the unavoidable work in it.

    python scripts/bench_search_step.py [--space=s7] [--teacher=resnet18] [--batch_size=128] \
        [--repeats=7] [--jit_compile] [--out=runs/bench/search_step.json]

Measures, on random CIFAR-shaped data (32x32x3, 10 classes; an untrained teacher: only the graph
matters for time):

- search step: `SearchModel.train_step` (the bilevel `step` + metric results, as `fit` runs it) in
  one `tf.function`;
- plain step (the unavoidable work): the same supernet's forward + backward with plain
  cross-entropy on both batches (weight update on the weight batch, width-logit update on the
  architecture batch) plus the teacher's inference on both batches (see
  `bench_common.make_plain_step`);
- teacher inference alone on both batches (to split the plain step into teacher and supernet).

The three run in turns (search, plain, teacher, search, ...), so load from other jobs hits them
alike; the overhead is the median over rounds of search / plain. Target: <= 1.15 for s7 with a
ResNet-18 teacher at batch 128. Images/second counts both batches (2 x batch per step) and, as
`weight_images_per_second`, the weight split only (what sets the epoch time).

The default run takes about 4-5 minutes on 2 CPU cores (most of it tracing: the first call of the
search step traces and optimises a graph of 64 student x 17 teacher taps).
"""

import dataclasses
import time

import bench_common as bc


def parse_args(argv=None):
  p = bc.base_parser("search_step", __doc__.split("\n\n")[0])
  p.add_argument("--space", default=None, help="search space (default s7; tiny under --tiny)")
  p.add_argument("--teacher", default=None,
                 help="built-in teacher arch (default resnet18; small_cnn under --tiny; wrn34_10, ...)")
  p.add_argument("--teacher_width", type=float, default=None,
                 help="widen factor of WRN teachers / width multiplier of the others (default: the arch's)")
  p.add_argument("--batch_size", type=int, default=None, help="examples per batch and per side (default 128)")
  p.add_argument("--target", type=float, default=1.15, help="target for search / plain")
  p.add_argument("--without_cl", action="store_true",
                 help="also time the search step traced with the cross-layer loss patched out")
  return bc.parse(p, argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  started = time.time()
  device = bc.device_info()
  tiny = args.tiny
  space = bc.pick(args, "space", "s7", "tiny")
  batch = bc.pick(args, "batch_size", 128, 4)
  repeats = bc.pick(args, "repeats", 7, 1)
  warmup = bc.pick(args, "warmup", 1, 0)
  arch = bc.pick(args, "teacher", "resnet18", "small_cnn")
  width = bc.pick(args, "teacher_width", None, 0.25)
  shape = (16, 16, 3) if tiny else bc.CIFAR_SHAPE

  bc.log(f"building {arch} teacher and {space} supernet (batch {batch}, {shape})")
  _, taps, teacher_desc = bc.build_teacher(arch, width, input_shape=shape)
  model = bc.build_search_model(space, taps, input_shape=shape, seed=args.seed)
  data = bc.random_batches(batch, input_shape=shape, seed=args.seed)

  search = bc.step_function(bc.make_search_step(model), args.jit_compile)
  plain = bc.step_function(bc.make_plain_step(model), args.jit_compile)

  def teacher_both(d):
    return taps(d[0][0])[0], taps(d[1][0])[0]

  teacher = bc.step_function(teacher_both, args.jit_compile)
  fns = {"search_step": lambda: search(data), "plain_step": lambda: plain(data),
         "teacher_inference": lambda: teacher(data)}
  if args.without_cl:
    import bench_cl_loss  # pylint: disable=import-outside-toplevel

    without_cl = bc.step_function(bc.make_search_step(model), args.jit_compile)
    with bench_cl_loss.cross_layer_loss_removed():
      without_cl.get_concrete_function(data)
    fns["search_step_without_cl"] = lambda: without_cl(data)
  first = {}
  for name, fn in fns.items():
    bc.log(f"first call (trace + optimise + run) of {name} ...")
    first[name] = round(bc.timed(fn), 2)  # First call: trace + compile + one run.
    bc.log(f"  {first[name]:.1f} s")
  bc.log(f"timing {repeats} interleaved rounds after {warmup} warm-up round(s)")
  timings = bc.time_interleaved(fns, repeats=repeats, warmup=warmup, log=bc.log)

  s, p, t = (timings[k]["median_s"] for k in ("search_step", "plain_step", "teacher_inference"))
  overhead = bc.ratio(timings["search_step"], timings["plain_step"])
  results = {
      "search_step": timings["search_step"],
      "plain_step": timings["plain_step"],
      "teacher_inference_both_batches": timings["teacher_inference"],
      "first_call_seconds": first,
      "overhead_ratio": overhead,
      "overhead_seconds_median": s - p,
      "supernet_part_of_plain_seconds_median": p - t,
      "teacher_share_of_plain": t / p,
      "images_per_second": 2 * batch / s,
      "weight_images_per_second": batch / s,
      "plain_images_per_second": 2 * batch / p,
      "student_layers": model.num_student_layers,
      "teacher_layers": model.num_teacher_layers,
  }
  if args.without_cl:
    results["search_step_without_cl"] = timings["search_step_without_cl"]
    results["overhead_ratio_without_cl"] = bc.ratio(timings["search_step_without_cl"], timings["plain_step"])
  settings = {
      "space": space, "teacher": teacher_desc, "batch_size": batch, "input_shape": list(shape),
      "num_classes": bc.CIFAR_CLASSES, "jit_compile": args.jit_compile, "repeats": repeats,
      "warmup_rounds": warmup, "seed": args.seed, "search_config": dataclasses.asdict(model.cfg),
      "weight_optimizer": type(model.optimizer).__name__, "arch_optimizer": type(model.arch_optimizer).__name__,
      "without_cl": args.without_cl,
  }
  method = (
      "Random [0,1] pixels and labels, untrained models. Each candidate is one tf.function "
      f"(jit_compile={args.jit_compile}), called once untimed to trace (first_call_seconds), then "
      f"{warmup} warm-up round(s) and {repeats} timed rounds; a round calls search_step, plain_step and "
      "teacher_inference back to back and waits for their outputs (.numpy()). search_step = "
      "SearchModel.train_step (bilevel step + metrics). plain_step = the same supernet, Gumbel-masked, "
      "BN in training mode: CE forward+backward on the arch batch updating the width logits (Adam) and "
      "on the weight batch updating the weights (SGD), plus teacher inference (training=False) on both "
      "batches. overhead_ratio.median_of_round_ratios (search/plain within each round) is the headline. "
      "images_per_second counts both batches of a step (2 x batch_size). With --without_cl one more "
      "candidate runs in the same rounds: search_step_without_cl (traced with "
      "layer_distances_from_energies/cross_layer_loss patched to zeros).")
  targets = {"search_step_overhead": bc.target(
      overhead["median_of_round_ratios"], args.target, "<=",
      f"search step / plain step, {space} + {arch}, batch {batch}")}
  payload = bc.write_result(args, "search_step", settings, results, targets, method, started, device)
  bc.log(f"search {s:.3f} s, plain {p:.3f} s (teacher {t:.3f} s): overhead x{overhead['median_of_round_ratios']:.3f}; "
         f"{results['images_per_second']:.1f} images/s")
  bc.report(payload, args.out)
  return payload


if __name__ == "__main__":
  main()
