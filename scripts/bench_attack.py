"""Benchmark: PGD-20 evaluation time against 20 x (forward + backward) of the same model and batch.

    python scripts/bench_attack.py [--model=child:s7] [--batch_size=128] [--steps=20] [--repeats=5] \
        [--out=runs/bench/attack.json]

On random CIFAR-shaped data (32x32x3, 10 classes), one model (default: the s7 child network at its
maximum widths, the size of the paper's RNAS-CL-S7 student; `--model=resnet18` etc. for a built-in
teacher architecture), in turns:

- pgd: `rnascl_tf.robust.attacks.generate` with PGD-k (L-inf, eps 8/255, step 2/255, random start, true
  labels, cleverhans backend) inside one `tf.function`, exactly as `RobustEvaluator` compiles it;
- fwd_bwd: one forward + backward of the cross-entropy w.r.t. the input (training=False), in one
  `tf.function`; the reference is steps x its median;
- forward: one inference call (for the evaluation reference);
- evaluate: `RobustEvaluator([PGD-k]).evaluate` on the one batch (clean predict, attack, adversarial
  predict, accuracy bookkeeping), compared with steps x fwd_bwd + 2 x forward.

Target: pgd / (steps x fwd_bwd) <= 1.15. About 6 minutes on 2 shared CPU cores, 2 of them tracing:
PGD-20 unrolls 20 forward+backward copies into one graph (about a minute to trace and optimise
on CPU), once for the bare attack and once more inside RobustEvaluator.
"""

import functools
import statistics
import time

import bench_common as bc


def parse_args(argv=None):
  p = bc.base_parser("attack", __doc__.split("\n\n")[0])
  p.add_argument("--model", default=None,
                 help="child:<space> (max-width child net) or a built-in teacher arch (default child:s7)")
  p.add_argument("--model_width", type=float, default=None, help="width multiplier of a teacher-arch model")
  p.add_argument("--batch_size", type=int, default=None, help="examples per batch (default 128)")
  p.add_argument("--steps", type=int, default=None, help="PGD steps (default 20)")
  p.add_argument("--eps", type=float, default=8 / 255)
  p.add_argument("--step_size", type=float, default=2 / 255)
  p.add_argument("--target", type=float, default=1.15, help="target for pgd / (steps x fwd_bwd)")
  return bc.parse(p, argv)


def build_model(spec: str, width, shape, seed: int):
  """(model, description) for `child:<space>` (max widths) or a built-in teacher arch."""
  import keras

  from rnascl_tf.models import child as child_lib
  from rnascl_tf.nas import search_space as ss

  keras.utils.set_random_seed(seed)
  if spec.startswith("child:"):
    space = ss.resolve_space(spec.split(":", 1)[1])
    choices = {"widths": {b.name: b.width_options[0] for b in ss.block_specs(space)},
               "expansions": {b.name: b.expansions[0] for b in ss.block_specs(space)}}
    model = child_lib.build_child_from_choices(space, choices, shape, bc.CIFAR_CLASSES, bc.CIFAR_MEAN[:shape[-1]],
                                               bc.CIFAR_STD[:shape[-1]])
    desc = {"model": spec, "kind": "child network at maximum widths"}
  else:
    model, _, tdesc = bc.build_teacher(spec, width, input_shape=shape)
    desc = {"model": spec, "kind": "built-in teacher architecture", "knobs": tdesc["knobs"]}
  desc["params"] = int(model.count_params())
  return model, desc


def main(argv=None) -> dict:
  args = parse_args(argv)
  started = time.time()
  device = bc.device_info()
  import numpy as np
  import tensorflow as tf

  from rnascl_tf.robust import attacks
  from rnascl_tf.robust.evaluator import RobustEvaluator

  tiny = args.tiny
  spec = bc.pick(args, "model", "child:s7", "child:tiny")
  batch = bc.pick(args, "batch_size", 128, 4)
  steps = bc.pick(args, "steps", 20, 3)
  repeats = bc.pick(args, "repeats", 5, 1)
  warmup = bc.pick(args, "warmup", 1, 0)
  shape = (16, 16, 3) if tiny else bc.CIFAR_SHAPE
  model, desc = build_model(spec, args.model_width, shape, args.seed)
  bc.log(f"model {spec}: {desc['params']} params; PGD-{steps} at batch {batch}")

  rng = np.random.default_rng(args.seed)
  x = tf.constant(rng.uniform(0.0, 1.0, (batch,) + tuple(shape)).astype("float32"))
  y = tf.constant(rng.integers(0, bc.CIFAR_CLASSES, (batch,)).astype("int32"))
  config = attacks.AttackConfig("pgd", eps=args.eps, step_size=args.step_size, steps=steps)

  def model_fn(images):  # One object for every call (cleverhans' gradient helper is keyed on it).
    return model(images, training=False)

  pgd = bc.step_function(functools.partial(attacks.generate, model_fn, config=config), args.jit_compile,
                        reduce_retracing=True)

  def fwd_bwd_fn(images, labels):
    with tf.GradientTape() as tape:
      tape.watch(images)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=model_fn(images))
    return tape.gradient(loss, images)

  fwd_bwd = bc.step_function(fwd_bwd_fn, args.jit_compile)
  forward = bc.step_function(model_fn, args.jit_compile)
  evaluator = RobustEvaluator(model_fn, [config])
  fns = {"pgd": lambda: pgd(x, y), "fwd_bwd": lambda: fwd_bwd(x, y), "forward": lambda: forward(x),
         "evaluate": lambda: evaluator.evaluate([(x, y)])}
  first = {}
  for name, fn in fns.items():
    first[name] = round(bc.timed(fn), 2)  # First call: trace + compile + one run.
    bc.log(f"first call of {name}: {first[name]:.1f} s")
  timings = bc.time_interleaved(fns, repeats=repeats, warmup=warmup, log=bc.log)

  attack_ratio = bc.ratio(timings["pgd"], timings["fwd_bwd"], den_scale=steps)
  eval_pairs = [e / (steps * fb + 2 * f) for e, fb, f in zip(timings["evaluate"]["samples_s"],
                                                             timings["fwd_bwd"]["samples_s"],
                                                             timings["forward"]["samples_s"])]
  eval_ratio = statistics.median(eval_pairs)
  results = {
      "pgd": timings["pgd"], "fwd_bwd": timings["fwd_bwd"], "forward": timings["forward"],
      "evaluate": timings["evaluate"], "first_call_seconds": first,
      "attack_ratio": attack_ratio,
      "evaluate_ratio_median_of_rounds": eval_ratio,
      "attack_images_per_second": batch / timings["pgd"]["median_s"],
      "attack_label": config.label(),
  }
  settings = {"model": desc, "batch_size": batch, "input_shape": list(shape), "steps": steps,
              "eps": args.eps, "step_size": args.step_size, "repeats": repeats, "warmup_rounds": warmup,
              "jit_compile": args.jit_compile, "seed": args.seed}
  method = (
      "Random [0,1] pixels and labels, untrained model. pgd = tf.function(functools.partial("
      "attacks.generate, model_fn, config=PGD)) with reduce_retracing, as RobustEvaluator builds it; "
      "fwd_bwd = tf.function: CE of model_fn(x) (training=False) and its gradient w.r.t. x; forward = "
      "tf.function(model_fn); evaluate = RobustEvaluator([PGD]).evaluate([(x, y)]). After one untimed "
      "first call each (first_call_seconds), warm-up and timed rounds call the four in turns; "
      "attack_ratio.median_of_round_ratios = median over rounds of pgd / (steps x fwd_bwd); "
      "evaluate_ratio = evaluate / (steps x fwd_bwd + 2 x forward).")
  targets = {"pgd_attack_ratio": bc.target(attack_ratio["median_of_round_ratios"], args.target, "<=",
                                           f"PGD-{steps} / ({steps} x forward+backward), {spec}, batch {batch}")}
  payload = bc.write_result(args, "attack", settings, results, targets, method, started, device)
  bc.report(payload, args.out)
  return payload


if __name__ == "__main__":
  main()
