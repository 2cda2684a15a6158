"""One prepared GPU check: devices, one device vs mirrored, XLA, and throughput in three precisions.

    python scripts/gpu_check.py [--out=scripts/bench_results/gpu_check.json] [--budget_s=400]
    python scripts/gpu_check.py --dry_run     # CPU, tiny shapes, ~50 CPU-seconds: the suite's test (--help)

On one GPU, as is, in at most about 8 minutes; writes one JSON and prints a table (BUILD.md, GPU check):
1. devices: GPUs, TF / CUDA / cuDNN (`tf.sysconfig.get_build_info()`), driver; the first GPU split into
   two logical GPUs (the CPU into two logical CPUs without a GPU, and always with --dry_run);
2. agreement: the search step and the `ce_kd` retraining step (synchronized BN, TF32 off), a few `fit`
   steps on one device and under `mirrored` over the two logical devices, --jit_compile off and on,
   within the CPU tests' tolerances (one device vs mirrored) or the XLA test's looser one;
3. throughput (images/s): teacher PGD-AT (ResNet-18, WRN-34-10), search (s7 with either teacher),
   retraining (--objectives, default trades_kd, ard, rslad, adaad; WRN-34-10 teacher), PGD-20
   evaluation (s7 child at maximum widths), each in float32 / bf16 / fp16 (Keras mixed policies, fp16 with loss scaling), XLA off and on, in priority
   order (ORDER); the float32 s7 + ResNet-18 jobs also give the search-step overhead and cross-layer share.
Throughput jobs whose predicted first call no longer fits in --budget_s are skipped and recorded.
"""

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time

import bench_cl_loss
import bench_common as bc

POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
WORKLOADS = ["teacher_pgd_at/resnet18", "teacher_pgd_at/wrn34_10", "search/s7+resnet18", "search/s7+wrn34_10",
             "eval/pgd20"]  # The retraining rows (--objectives) go before the evaluation row.
# Throughput jobs in priority order: what runs first is what a tight budget still measures.
ORDER = [("float32", False), ("bf16", True), ("float32", True), ("bf16", False), ("fp16", True), ("fp16", False)]
# Tolerances: one device vs mirrored as the CPU tests assert them; XLA vs uncompiled as the XLA test does.
TIGHT = {"search": {"log_rtol": 1e-4, "log_atol": 1e-5, "var_atol": 1e-5},
         "retrain": {"log_rtol": 1e-5, "log_atol": 1e-6, "var_atol": 1e-5}}
LOOSE = {"log_rtol": 0.02, "log_atol": 1e-3, "var_atol": 0.5}
# --dry_run's space: the dry run's cost is tracing, which grows with the blocks; one residual block with two
# widths runs the same search and retraining steps as `tiny`'s three blocks (it has no stride-2 block).
DRY_SPACE_SPEC = {"name": "dry_one_block", "stem_width": 8, "stages": [
    {"blocks": 1, "stride": 1, "max_width": 8, "width_options": [8, 4], "expansions": [3]}]}
DRY_SPACE = json.dumps(DRY_SPACE_SPEC)
DRY_RUN_HELP = ("the suite's check of this script's code paths, on the CPU: 8x8 inputs, a one-block space, small_cnn "
                "teachers; one device vs mirrored (2 logical CPUs, no XLA); one timed step per float32 row and the "
                "bf16 teacher row. About 50 s of CPU (user + sys) on 2 cores; longer on a busy machine (target 60 s)")
DEFAULTS = [("out", os.path.join(bc.REPO, "scripts", "bench_results", "gpu_check.json"),  # (option, GPU, --dry_run)
             os.path.join(bc.DEFAULT_OUT_DIR, "gpu_check_dry_run.json")),
            ("budget_s", 400.0, 900.0), ("measure_budget_s", 40.0, 10.0), ("steps", 5, 1),
            ("batch_size", 128, 8), ("eval_batch_size", 500, 8), ("pgd_steps", 10, 2), ("eval_steps", 20, 2),
            ("agree_space", "tiny", DRY_SPACE), ("agree_teacher", "resnet18", "small_cnn"),
            ("agree_teacher_width", 0.25, 0.25), ("agree_batch", 32, 8), ("agree_steps", 3, 2), ("seed", 0, 0),
            ("objectives", "trades_kd,ard,rslad,adaad", "trades_kd,adaad")]  # Retraining rows; adaad's attack runs the teacher.
FP16_ON_CPU = "fp16 is not run on CPU: float16 kernels are emulated there (slower than float32)"
XLA_ON_CPU = {"mirrored": "XLA cannot run a step whose variables live on a second logical CPU (both are one XLA "
                          "CPU device; BUILD.md): needs GPUs",
              "one_device": "dry run: XLA on one CPU is the suite's slow test (tests/nas/test_search_model.py)"}
AGREE_OBJECTIVE = "ce_kd"  # As tests/runtime/test_distribute.py (TRADES' sign steps amplify rounding).


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dry_run", action="store_true", help=DRY_RUN_HELP)
  for name, gpu, dry in DEFAULTS:
    p.add_argument(f"--{name}", type=type(gpu), default=None, help=f"default {gpu} ({dry} with --dry_run)")
  p.add_argument("--logical_gpu_memory_mb", type=int, default=None,
                 help="memory of each of the two logical GPUs (default 45%% of the GPU's)")
  p.add_argument("--machine_shared", action="store_true", help="record that other jobs shared the machine")
  p.add_argument("--note", default="", help="free text recorded in the JSON")
  args = bc.parse(p, argv)
  for name, gpu, dry in DEFAULTS:
    if getattr(args, name) is None:
      setattr(args, name, dry if args.dry_run else gpu)
  args.tiny = args.dry_run  # What bench_common.write_result records.
  args.objectives = [o for o in args.objectives.split(",") if o]
  return args


def split_devices(args) -> dict:
  """Two logical devices on the first GPU (or the CPU); must run before TensorFlow initialises them."""
  import tensorflow as tf

  gpus = [] if args.dry_run else tf.config.list_physical_devices("GPU")
  smi = bc.nvidia_smi() if gpus else []
  kind = "GPU" if gpus else "CPU"
  memory_mb = None
  try:
    if args.dry_run:
      tf.config.set_visible_devices([], "GPU")
    if gpus:
      tf.config.set_visible_devices(gpus[0], "GPU")  # The check is about one GPU.
      memory_mb = args.logical_gpu_memory_mb or int(0.45 * (smi[0]["memory_mb"] if smi else 16000))
    config = [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb) for _ in range(2)]
    tf.config.set_logical_device_configuration((gpus or tf.config.list_physical_devices("CPU"))[0], config)
  except RuntimeError:  # Already initialised, e.g. by the test suite's conftest (two logical CPUs).
    pass
  logical = [d.name for d in tf.config.list_logical_devices(kind)]
  info = tf.sysconfig.get_build_info()
  return {"kind": kind, "physical_gpus": [g.name for g in gpus], "nvidia_smi": smi, "logical_devices": logical,
          "logical_gpu_memory_mb": memory_mb, "replicas": logical[:2],
          "build_info": {k: info.get(k) for k in ("cuda_version", "cudnn_version", "is_cuda_build",
                                                  "cuda_compute_capabilities")}}


@contextlib.contextmanager
def dtype_policy(precision: str):
  """Keras' global dtype policy for the layers built inside; float32 again afterwards (errors too)."""
  import keras

  keras.config.set_dtype_policy(POLICIES[precision])
  try:
    yield
  finally:
    keras.config.set_dtype_policy("float32")


def wrapper(precision: str):
  """fp16 trains with dynamic loss scaling (the steps scale the loss by `optimizer.scale_loss`)."""
  import keras

  return keras.optimizers.LossScaleOptimizer if precision == "fp16" else (lambda opt: opt)


class Setup:
  """The shapes and models of one run: the real ones, or tiny CPU stand-ins under --dry_run."""

  def __init__(self, args):
    self.args, self.dry = args, args.dry_run
    self.shape = (8, 8, 3) if self.dry else bc.CIFAR_SHAPE
    self.space = DRY_SPACE if self.dry else "s7"  # A built-in name or JSON text (`resolve_space`).
    self.space_name = DRY_SPACE_SPEC["name"] if self.dry else self.space

  def teacher(self, arch, width=None, brief=False):
    """(model, taps, description) of a seeded built-in teacher (`brief`: without the tap shapes)."""
    import keras

    keras.utils.set_random_seed(self.args.seed)
    if self.dry:
      arch, width = "small_cnn", 0.25
    model, taps, desc = bc.build_teacher(arch, width, input_shape=self.shape)
    return model, taps, ({k: v for k, v in desc.items() if k != "tap_shapes"} if brief else desc)

  def child(self, space=None, synchronized_bn=False):
    """The child network at the maximum width and expansion of every block."""
    import keras

    from rnascl_tf.models import child as child_lib
    from rnascl_tf.nas import search_space as ss

    keras.utils.set_random_seed(self.args.seed)
    space = ss.resolve_space(space or self.space)
    choices = {"widths": {b.name: max(b.width_options) for b in ss.block_specs(space)},
               "expansions": {b.name: max(b.expansions) for b in ss.block_specs(space)}}
    return child_lib.build_child_from_choices(space, choices, self.shape, bc.CIFAR_CLASSES,
                                              bc.CIFAR_MEAN, bc.CIFAR_STD, synchronized_bn=synchronized_bn)

  def batch(self, n, steps=1):
    """(x, y): `steps * n` random pixels and labels."""
    return bc.random_batches(n * steps, input_shape=self.shape, seed=self.args.seed)[0]


def compile_trainer(trainer, wrap, jit=False):
  import keras

  opt = wrap(keras.optimizers.SGD(0.1, momentum=0.9))
  opt.build(trainer.net.trainable_variables)
  trainer.compile(optimizer=opt, jit_compile=jit)


def retrain_trainer(setup, child, taps, objective: str, pgd_steps: int):
  """A `RobustTrainer` as the retraining builds it for `objective` (its mode and distillation terms)."""
  from rnascl_tf.configs import DistillConfig, RetrainConfig, RobustConfig
  from rnascl_tf.robust.trainer import RobustTrainer

  rc = RetrainConfig(genotype="(gpu_check: none)", objective=objective)
  n_s, n_t = len(child.student_layer_names), len(taps.layer_names)
  tutor_map = tuple(i * (n_t - 1) // max(n_s - 1, 1) for i in range(n_s))
  distill = rc.distill_for_objective(DistillConfig(cl_grid=4 if setup.dry else 8, tutor_map=tutor_map))
  used = rc.needs_teacher(distill)
  return RobustTrainer(child, RobustConfig(mode=rc.adv_mode, steps=pgd_steps), seed=setup.args.seed,
                       teacher=taps if used else None, distill=distill if used else None, objective=rc.spec.loss)


def agreement_run(setup, kind, strategy, jit, teachers):
  """`fit` of `agree_steps` steps: {logs, vars (arch / weights), fit_s, step_s (median after the first)}."""
  import keras
  import numpy as np
  import tensorflow as tf

  a = setup.args
  with strategy.scope():
    if strategy not in teachers:  # One frozen teacher per strategy (inference only; each model reseeds).
      teachers[strategy] = setup.teacher(a.agree_teacher, a.agree_teacher_width)[1]
    taps = teachers[strategy]
    if kind == "search":
      model = bc.build_search_model(a.agree_space, taps, setup.shape, seed=a.seed, synchronized_bn=True)
      model.compile(optimizer=model.optimizer, jit_compile=jit)
      groups = {"arch": model.arch_variables(), "weights": model.supernet.variables}
    else:
      model = retrain_trainer(setup, setup.child(a.agree_space, synchronized_bn=True), taps, AGREE_OBJECTIVE, 2)
      compile_trainer(model, wrapper("float32"), jit)
      groups = {"weights": model.net.variables}
  x, y = setup.batch(a.agree_batch, 2 * a.agree_steps)
  n = a.agree_batch * a.agree_steps
  ds = tf.data.Dataset.from_tensor_slices((x[:n], y[:n]))
  if kind == "search":
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices((x[n:], y[n:]))))
  ds = ds.batch(a.agree_batch)
  ends, start = [], time.perf_counter()  # Step times after the first (which traces) are steady ones.
  clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
  logs = {k: float(v[-1]) for k, v in model.fit(ds, epochs=1, verbose=0, callbacks=[clock]).history.items()}
  values = {g: [np.array(v.numpy()) for v in vs] for g, vs in groups.items()}
  return {"logs": logs, "vars": values, "fit_s": round(time.perf_counter() - start, 2),
          "step_s": statistics.median(np.diff(ends)) if len(ends) > 1 else None}


def compare(a, b, tol) -> dict:
  """Largest differences of two runs, and the worst of |a - b| / tolerance (<= 1: they agree)."""
  log_err = {k: abs(a["logs"][k] - v) / (tol["log_atol"] + tol["log_rtol"] * abs(v))
             for k, v in b["logs"].items() if k in a["logs"]}
  var_diff = {g: max(float(abs(x - y).max()) for x, y in zip(a["vars"][g], vs)) for g, vs in b["vars"].items()}
  worst = max(list(log_err.values()) + [d / tol["var_atol"] for d in var_diff.values()])
  return {"worst_error_over_tolerance": worst, "tolerance": tol, "max_abs_var_diff": var_diff,
          "log_error_over_tolerance": log_err}


def agreement(setup, devices) -> dict:
  """One device vs mirrored, XLA vs uncompiled, for the search and the retraining step (TF32 off)."""
  import tensorflow as tf

  tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
  tf.config.experimental.enable_tensor_float_32_execution(False)
  mirrored = tf.distribute.MirroredStrategy(devices["replicas"])  # One strategy: its collective keys stay unique.
  strategies = {"one_device": tf.distribute.get_strategy(), "mirrored": mirrored}
  runs, checks, teachers = {}, {}, {}
  try:
    for kind in ("search", "retrain"):
      for where, strategy in strategies.items():
        for jit in (False, True):
          name = f"{kind}/{where}/xla_{'on' if jit else 'off'}"
          if jit and devices["kind"] == "CPU" and (where == "mirrored" or setup.dry):
            runs[name] = {"status": "skipped", "reason": XLA_ON_CPU[where]}
            continue
          bc.log(f"agreement run {name} ...")
          try:
            runs[name] = {"status": "ok", **agreement_run(setup, kind, strategy, jit, teachers)}
          except Exception as e:  # Recorded: a failure here is what the check is for.
            runs[name] = {"status": "failed", "error": f"{type(e).__name__}: {str(e)[:500]}"}
      pairs = {"mirrored_vs_one_device": ("mirrored/xla_off", "one_device/xla_off", TIGHT[kind]),
               "mirrored_vs_one_device_under_xla": ("mirrored/xla_on", "one_device/xla_on", TIGHT[kind]),
               "xla_vs_uncompiled": ("one_device/xla_on", "one_device/xla_off", LOOSE),
               "xla_vs_uncompiled_mirrored": ("mirrored/xla_on", "mirrored/xla_off", LOOSE)}
      for check, (a, b, tol) in pairs.items():
        ra, rb = runs[f"{kind}/{a}"], runs[f"{kind}/{b}"]
        if ra["status"] == rb["status"] == "ok":
          checks[f"{kind}/{check}"] = {**compare(ra, rb, tol), "step_s": [ra["step_s"], rb["step_s"]]}
  finally:
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
  for r in runs.values():
    r.pop("vars", None)
  return {"runs": runs, "checks": checks, "tf32_during_checks": False, "tf32_default": tf32}


def build_workload(setup, name, precision):
  """(candidates(jit) -> {name: zero-arg step}, images per step, description) of one workload."""
  from rnascl_tf.configs import RobustConfig
  from rnascl_tf.robust import attacks
  from rnascl_tf.robust.trainer import RobustTrainer

  a, wrap = setup.args, wrapper(precision)
  kind, arg = name.split("/")
  if kind in ("teacher_pgd_at", "retrain"):
    net, taps, desc = setup.teacher(arg if kind == "teacher_pgd_at" else "wrn34_10", brief=True)
    if kind == "retrain":
      trainer = retrain_trainer(setup, setup.child(), taps, arg, a.pgd_steps)
    else:
      trainer = RobustTrainer(net, RobustConfig(mode="pgd", steps=a.pgd_steps), seed=a.seed)
    compile_trainer(trainer, wrap)
    data = setup.batch(a.batch_size)
    make = lambda jit: {"step": functools.partial(bc.step_function(trainer.train_step, jit), data)}  # noqa: E731
    return make, a.batch_size, desc
  if kind == "search":
    _, taps, desc = setup.teacher(arg.split("+")[1], brief=True)
    model = bc.build_search_model(setup.space, taps, setup.shape, seed=a.seed, wrap_optimizer=wrap)
    data = bc.random_batches(a.batch_size, input_shape=setup.shape, seed=a.seed)

    def search_candidates(jit):
      fns = {"step": functools.partial(bc.step_function(bc.make_search_step(model), jit), data)}
      if precision == "float32" and arg.endswith("resnet18"):  # The overhead and cross-layer share.
        fns["plain"] = functools.partial(bc.step_function(bc.make_plain_step(model), jit), data)
        without_cl = bc.step_function(bc.make_search_step(model), jit)
        with bench_cl_loss.cross_layer_loss_removed():
          without_cl.get_concrete_function(data)
        fns["without_cl"] = functools.partial(without_cl, data)
      return fns

    return search_candidates, 2 * a.batch_size, {**desc, "space": setup.space_name}
  child = setup.child()
  config = attacks.AttackConfig("pgd", eps=8 / 255, step_size=2 / 255, steps=a.eval_steps)
  model_fn = functools.partial(child.__call__, training=False)  # One object: cleverhans keys on it.
  x, y = setup.batch(a.eval_batch_size)

  def eval_candidates(jit):
    attack = bc.step_function(functools.partial(attacks.generate, model_fn, config=config), jit,
                              reduce_retracing=True)
    return {"step": lambda: attack(x, y)}

  return eval_candidates, a.eval_batch_size, {"model": f"child:{setup.space_name} at maximum widths",
                                              "params": int(child.count_params()), "attack": config.label()}


def column(precision: str, jit: bool) -> str:
  return f"{precision}/xla_{'on' if jit else 'off'}"


def measure(make, images, budget_s, steps) -> dict:
  """`make()` (the candidates' tf.functions), the first call (trace + compile + one step) of each, one
  warm-up round, then timed rounds (at most `steps`, as many as fit in `budget_s`, at least one)."""
  start = time.perf_counter()
  fns, setup_s = make(), time.perf_counter() - start
  first = {n: round(bc.timed(fn), 2) for n, fn in fns.items()}
  warm = sum(bc.timed(fn) for fn in fns.values())
  left = budget_s - (time.perf_counter() - start)
  repeats = max(1, min(steps, int(left / max(warm, 1e-6))))
  t = bc.time_interleaved(fns, repeats=repeats, warmup=0)
  out = {"status": "ok", "setup_s": round(setup_s, 2), "first_call_s": first, "repeats": repeats, "step": t["step"],
         "images_per_second": images / t["step"]["median_s"],
         "over_budget": bool(time.perf_counter() - start > budget_s)}
  if "plain" in t:
    out["overhead_ratio"] = bc.ratio(t["step"], t["plain"])
    out["cl_share_median_of_rounds"] = statistics.median(
        (s - w) / s for s, w in zip(t["step"]["samples_s"], t["without_cl"]["samples_s"]))
    out["plain"], out["without_cl"] = t["plain"], t["without_cl"]
  return out


def skip_reason(setup, devices, name, precision, jit):
  if precision == "fp16" and devices["kind"] == "CPU":
    return FP16_ON_CPU
  if setup.dry and name.endswith("wrn34_10"):
    return "dry run: the same small_cnn teacher as the resnet18 row"
  if setup.dry and jit:
    return "dry run: XLA is for GPUs here (on CPU the compiled steps are slower; BUILD.md, design notes)"
  if setup.dry and precision != "float32" and name != "teacher_pgd_at/resnet18":
    return "dry run: bf16 is tried on the teacher PGD-AT row only"
  return None


def throughput(setup, devices, deadline) -> dict:
  args = setup.args
  names = WORKLOADS[:4] + [f"retrain/{o}" for o in args.objectives] + WORKLOADS[4:]
  jobs = [(n, p, j) for p, j in ORDER for n in names]
  pending = {(n, p): sum(1 for job in jobs if job[:2] == (n, p)) for n, p, _ in jobs}
  built, predicted, results = {}, {}, {n: {} for n in names}
  for name, precision, jit in jobs:
    key = column(precision, jit)
    reason = skip_reason(setup, devices, name, precision, jit)
    guess = predicted.get((name, jit), args.measure_budget_s)
    if reason is None and time.time() + guess > deadline:
      reason = f"over budget: {deadline - time.time():.0f} s left, first call predicted {guess:.0f} s"
    if reason:
      results[name][key] = {"status": "skipped", "reason": reason}
    else:
      bc.log(f"throughput {name} {key} ...")
      try:
        start = time.perf_counter()
        if (name, precision) not in built:
          with dtype_policy(precision):
            built[(name, precision)] = build_workload(setup, name, precision)
        candidates, images, desc = built[(name, precision)]
        build_s = time.perf_counter() - start
        entry = measure(functools.partial(candidates, jit), images, args.measure_budget_s, args.steps)
        results[name][key] = {**entry, "build_s": round(build_s, 2), "model": desc}
        predicted[(name, jit)] = build_s + entry["setup_s"] + sum(entry["first_call_s"].values())
      except Exception as e:  # Recorded (an out-of-memory error on a small GPU, a kernel missing...).
        results[name][key] = {"status": "failed", "error": f"{type(e).__name__}: {str(e)[:500]}"}
    pending[(name, precision)] -= 1
    if not pending[(name, precision)]:
      built.pop((name, precision), None)  # Frees the models once their last job ran.
  return results


def targets_of(results, dry) -> dict:
  targets = {}
  for name, check in results["agreement"]["checks"].items():
    targets[f"agreement/{name}"] = bc.target(check["worst_error_over_tolerance"], 1.0, "<=",
                                             f"{name}: worst |difference| / tolerance")
  failed = [n for n, r in results["agreement"]["runs"].items() if r["status"] == "failed"]
  targets["agreement_runs_failed"] = bc.target(len(failed), 0, "<=", "agreement runs that raised: " + ", ".join(failed))
  for xla, entry in results["search_overhead"].items():
    if not dry and "overhead_ratio" in entry:
      targets[f"search_step_overhead/{xla}"] = bc.target(entry["overhead_ratio"], 1.15, "<=", "search / plain step")
      targets[f"cl_share/{xla}"] = bc.target(entry["cl_share"], 0.10, "<", "(step - step without CL) / step")
  targets["wall_time"] = bc.target(results["wall_seconds_before_write"], 60 if dry else 480, "<=",
                                   "whole script, seconds (a minute for the dry run, 8 minutes on a GPU)")
  return targets


def print_table(results) -> None:
  d, runs = results["devices"], results["agreement"]["runs"]
  bc.log(f"\ndevices: {d['kind']} {d['nvidia_smi'] or d['physical_gpus'] or ''}; replicas {d['replicas']}; "
         f"CUDA {d['build_info']['cuda_version']}, cuDNN {d['build_info']['cudnn_version']}")
  for name, run in runs.items():
    extra = f"fit {run['fit_s']:.1f} s, step {run['step_s'] or 0:.4f} s" if run["status"] == "ok" else (
        run.get("reason") or run.get("error", ""))[:90]
    bc.log(f"  run {name:36s} {run['status']:8s} {extra}")
  for name, c in results["agreement"]["checks"].items():
    bc.log(f"  check {name:46s} worst/tol {c['worst_error_over_tolerance']:.3g}")
  cols = [column(p, j) for p, j in ORDER]
  bc.log("\nimages/s".ljust(26) + "".join(c.rjust(15) for c in cols))
  for name, row in results["throughput"].items():
    cells = [f"{row[c]['images_per_second']:.1f}" if row[c]["status"] == "ok" else row[c]["status"] for c in cols]
    bc.log(name.ljust(25) + "".join(c.rjust(15) for c in cells))
  for xla, e in results["search_overhead"].items():
    bc.log(f"search overhead ({xla}): x{e['overhead_ratio']:.3f}, cross-layer share {100 * e['cl_share']:.1f}%")


def main(argv=None) -> dict:
  args = parse_args(argv)
  started = time.time()
  deadline = started + args.budget_s
  devices = split_devices(args)
  device = bc.device_info()
  setup = Setup(args)
  results = {"devices": devices, "agreement": agreement(setup, devices)}
  results["throughput"] = throughput(setup, devices, deadline)
  results["search_overhead"] = {  # float32, XLA off and on: search / plain step, (step - step without CL) / step.
      k.split("/")[1]: {"overhead_ratio": e["overhead_ratio"]["median_of_round_ratios"],
                        "cl_share": e["cl_share_median_of_rounds"]}
      for k, e in results["throughput"]["search/s7+resnet18"].items() if "overhead_ratio" in e}
  results["wall_seconds_before_write"] = round(time.time() - started, 1)
  settings = {k: getattr(args, k) for k, _, _ in DEFAULTS if k != "out"}
  settings.update({"dry_run": args.dry_run, "objectives": args.objectives,
                   "input_shape": list(setup.shape), "space": setup.space, "precisions": POLICIES,
                   "priority_order": [column(p, j) for p, j in ORDER],
                   "fp16": FP16_ON_CPU if devices["kind"] == "CPU" else "run, with a LossScaleOptimizer"})
  method = ("Agreement: worst |difference| / (atol + rtol |value|) of the last logged metrics and |variable "
            "difference| / atol (<= 1 agrees). Throughput: first call and one warm-up round untimed, then timed "
            "rounds; images/s = images per step / median step (the search step counts both batches).")
  payload = bc.write_result(args, "gpu_check", settings, results, targets_of(results, args.dry_run), method, started,
                            device, script="scripts/gpu_check.py")
  print_table(results)
  bc.report(payload, args.out)
  return payload


if __name__ == "__main__":
  # Exit status 1 when an agreement check failed (the throughput and time targets only inform).
  sys.exit(int(not all(t["met"] for k, t in main()["targets"].items() if k.startswith("agreement"))))
