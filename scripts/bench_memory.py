"""Benchmark: peak memory of the search step against the plain step, with jit_compile off and on.

    python scripts/bench_memory.py [--space=s7] [--teacher=resnet18] [--batch_size=128] [--steps=5] \
        [--jit_modes=off,on] [--out=runs/bench/memory.json]

Each configuration (plain or search step x jit_compile off or on) runs in a FRESH Python process
(this script with --worker), so no configuration inherits another's peak or allocator state. The
worker builds the teacher, the supernet and the SearchModel (as bench_search_step.py does), makes
the two random batches, records its baseline, then calls the step (`tf.function` of
`SearchModel.train_step`, or of the plain step: supernet CE forward+backward on both batches +
teacher inference, see `bench_common.make_plain_step`) --steps times and records the peak:

- CPU: peak resident set size from `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the kernel's
  high-water mark of the process), minus the resident size (VmRSS) just before the first step call.
  The delta therefore covers tracing, graph optimisation (and XLA compilation with jit), the
  activations kept for the backward pass, gradients and allocator slack. It is recorded after every
  step: glibc's allocator can keep growing over the first steps, so the headline uses the last one.
- CPU, tensors only (--bfc_modes, default: jit off): the same pair of workers again with
  TF_CPU_ALLOCATOR_USE_BFC=true, TensorFlow's BFC allocator for host memory, which makes
  `get_memory_info('CPU:0')` available: its peak bytes in use minus the bytes in use at the
  baseline. This counts live tensors only (activations kept for the backward pass, gradients,
  temporaries), so it neither grows with glibc fragmentation nor includes graph-building memory.
- GPU (when one is visible): `tf.config.experimental.get_memory_info('GPU:0')['peak']` after the
  steps, with `reset_memory_stats` at the baseline, minus the 'current' bytes at the baseline (TF's
  own allocator: activations, gradients, workspace). The RSS numbers are recorded too.

- jit on, tensors only (unless --skip_xla_buffers): a further worker per step runs one call with
  XLA_FLAGS=--xla_dump_to=<temp folder> and reads the compiled step's buffer assignment. XLA plans
  all memory of a compiled program ahead of running it (parameters, outputs, one preallocated block
  of temporaries packed by liveness); its "Total bytes used" is the program's tensor memory, free
  of allocator slack and of the compiler's own working memory (which the RSS delta includes).

Targets: search / plain peak delta <= 1.3 with jit_compile off (the default) and on, and for the
tensor peak of the BFC-allocator workers (jit off) and of the XLA program (jit on). Also reported: jit on / off for each step, and (Linux) the
peak of steps 2..n alone (`steady_peak_delta_mb`: after the first call, freed heap is returned with
malloc_trim and the high-water mark is reset), which separates XLA compilation from the steps.

--without_cl adds a BFC-allocator worker of the search step traced with the cross-layer loss
patched out (bench_cl_loss.cross_layer_loss_removed): the loss's own share of the peak.
About 12-18 minutes on 2 CPU cores with both jit modes (the XLA compilation of the search step
alone takes 2-3 minutes on CPU).
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import bench_common as bc

KINDS = ("plain", "search")
# current: the steps as the search runs them; without_cl: the search step without the cross-layer loss;
# xla_buffers: jit on, XLA dumping its buffer assignment (the dump's own memory spoils the RSS figures).
VARIANTS = ("current", "without_cl", "xla_buffers")


def parse_args(argv=None):
  p = bc.base_parser("memory", __doc__.split("\n\n")[0])
  p.add_argument("--space", default=None, help="search space (default s7)")
  p.add_argument("--teacher", default=None, help="built-in teacher arch (default resnet18; small_cnn under --tiny)")
  p.add_argument("--teacher_width", type=float, default=None, help="as in bench_search_step.py")
  p.add_argument("--batch_size", type=int, default=None, help="examples per batch and per side (default 128)")
  p.add_argument("--steps", type=int, default=None, help="step calls per worker (default 5)")
  p.add_argument("--jit_modes", default=None, help="comma-separated off,on (default both; off under --tiny)")
  p.add_argument("--target", type=float, default=1.3, help="target for search / plain peak delta")
  p.add_argument("--worker_timeout", type=int, default=1800, help="seconds per worker process")
  p.add_argument("--bfc_modes", default=None,
                 help="jit modes (off,on) for which a second pair of workers runs with TensorFlow's BFC "
                      "CPU allocator (TF_CPU_ALLOCATOR_USE_BFC=true), whose peak bytes in use "
                      "(get_memory_info('CPU:0')) count only tensors, free of glibc fragmentation "
                      "(default off: jit off only; 'none' to skip; ignored on GPU)")
  p.add_argument("--without_cl", action="store_true",
                 help="also run the search step with the cross-layer loss patched out (BFC-allocator "
                      "worker at jit off on CPU): the loss's own share of the peak")
  p.add_argument("--skip_xla_buffers", action="store_true",
                 help="with jit on, do not run the two extra workers that dump XLA's buffer assignment "
                      "(the compiled step's planned tensor memory; one step each)")
  p.add_argument("--parallel", action="store_true",
                 help="start the workers of one jit mode together (default under --tiny). Each process's "
                      "peak is its own, but concurrent workers compete for RAM and CPU")
  # Worker mode (internal): one configuration in this process, results to --worker_out.
  p.add_argument("--worker", action="store_true", help=argparse_suppress())
  p.add_argument("--kind", choices=KINDS, default="search", help=argparse_suppress())
  p.add_argument("--variant", choices=VARIANTS, default="current", help=argparse_suppress())
  p.add_argument("--worker_out", default=None, help=argparse_suppress())
  p.add_argument("--xla_dump_dir", default=None, help=argparse_suppress())
  return bc.parse(p, argv)


def argparse_suppress():
  import argparse
  return argparse.SUPPRESS


def _rss_mb() -> float:
  """Current resident set size (VmRSS) in MiB."""
  with open("/proc/self/status", encoding="utf-8") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def _maxrss_mb() -> float:
  import resource
  # Linux reports kilobytes (macOS bytes; these scripts target Linux).
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> bool:
  """Returns freed heap to the system (glibc `malloc_trim`: what tracing and XLA compilation freed
  would otherwise stay resident), then resets the kernel's resident high-water mark (VmHWM, and with
  it ru_maxrss) to the current RSS (Linux >= 4.0: '5' to /proc/self/clear_refs). Returns False where
  the reset is not possible."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass  # Not glibc: the reset alone.
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def xla_buffer_assignment(dump_dir: str, function_name: str) -> dict:
  """What XLA allocates to run the compiled step, from its buffer-assignment dump.

  XLA plans a compiled program's memory ahead of running it: every parameter (variables, data),
  output and one preallocated block for all temporaries (activations kept for the backward pass,
  gradients, scratch), packed by liveness. The dump's "Total bytes used" is that plan's total: the
  program's tensor memory, free of the allocator and of the compiler's own working memory.

  Args:
    dump_dir: the --xla_dump_to folder of this process.
    function_name: the traced Python function's name (`search_step`, `plain_step`).

  Returns:
    {"xla_program_mb", "xla_temp_mb", "xla_buffer_assignment_file"} for the largest matching module.
  """
  best = None
  for name in os.listdir(dump_dir):
    if f"_{function_name}_" not in name or not name.endswith("after_optimizations-buffer-assignment.txt"):
      continue
    with open(os.path.join(dump_dir, name), encoding="utf-8") as f:
      text = f.read()
    total = re.search(r"^Total bytes used: (\d+)", text, re.M)
    if total is None:
      continue
    temps = [int(m) for m in re.findall(r"^allocation \d+: size (\d+), preallocated-temp", text, re.M)]
    found = {"xla_program_mb": int(total.group(1)) / 2**20, "xla_temp_mb": sum(temps) / 2**20,
             "xla_buffer_assignment_file": name}
    # The size of what was compiled: instructions and fusions (each fusion is a kernel to generate).
    hlo = os.path.join(dump_dir, name.replace("-buffer-assignment.txt", ".txt"))
    if os.path.exists(hlo):
      with open(hlo, encoding="utf-8") as f:
        lines = f.read().splitlines()
      found["xla_instructions"] = sum(" = " in line for line in lines)
      found["xla_fusions"] = sum(bool(re.search(r" = \S+ fusion\(", line)) for line in lines)
    if best is None or found["xla_program_mb"] > best["xla_program_mb"]:
      best = found
  if best is None:
    raise RuntimeError(f"no XLA buffer assignment of {function_name} in {dump_dir}: did XLA compile it "
                       "(jit_compile), and does this XLA honour --xla_dump_to?")
  return best


def run_worker(args) -> dict:
  """One configuration in this (fresh) process."""
  record = {"kind": args.kind, "jit_compile": bool(args.jit_compile)}
  record["rss_before_tf_import_mb"] = _rss_mb()
  import tensorflow as tf

  tiny = args.tiny
  space = bc.pick(args, "space", "s7", "tiny")
  batch = bc.pick(args, "batch_size", 128, 4)
  # The buffer assignment is known once the step has compiled: one call is enough.
  steps = 1 if args.variant == "xla_buffers" else bc.pick(args, "steps", 5, 2)
  arch = bc.pick(args, "teacher", "resnet18", "small_cnn")
  width = bc.pick(args, "teacher_width", None, 0.25)
  shape = (16, 16, 3) if tiny else bc.CIFAR_SHAPE
  gpus = tf.config.list_physical_devices("GPU")
  _, taps, _ = bc.build_teacher(arch, width, input_shape=shape)
  model = bc.build_search_model(space, taps, input_shape=shape, seed=args.seed)
  data = bc.random_batches(batch, input_shape=shape, seed=args.seed)
  step_fn = bc.make_search_step(model) if args.kind == "search" else bc.make_plain_step(model)
  fn = bc.step_function(step_fn, args.jit_compile)
  record["variant"] = args.variant
  if gpus:
    tf.config.experimental.reset_memory_stats("GPU:0")
    record["gpu_current_at_baseline_mb"] = tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
  bfc = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true")
  record["cpu_allocator"] = "bfc" if bfc else "default"
  if bfc:
    tf.config.experimental.reset_memory_stats("CPU:0")
    record["tensor_current_at_baseline_mb"] = tf.config.experimental.get_memory_info("CPU:0")["current"] / 2**20
  record["rss_baseline_mb"] = _rss_mb()
  record["maxrss_at_baseline_mb"] = _maxrss_mb()
  start = time.perf_counter()
  with contextlib.ExitStack() as patches:
    if args.variant == "without_cl":
      import bench_cl_loss  # pylint: disable=import-outside-toplevel
      patches.enter_context(bench_cl_loss.cross_layer_loss_removed())
    fn.get_concrete_function(data)  # Traced (and cached) under the patches.
  record["trace_seconds"] = time.perf_counter() - start
  record["maxrss_after_trace_mb"] = _maxrss_mb()
  record["maxrss_after_step_mb"], record["step_seconds"] = [], []
  peaks, was_reset = record["maxrss_after_step_mb"], False
  for i in range(steps):
    record["step_seconds"].append(bc.timed(lambda: fn(data)))
    # After the reset the kernel's mark covers the later steps only; the run's peak keeps step 1's.
    peaks.append(max(peaks[0], _maxrss_mb()) if was_reset else _maxrss_mb())
    if i == 0 and steps > 1:
      # The first call compiles (XLA with jit_compile) and allocates its caches; from here on the
      # high-water mark is that of the steps alone, with everything the first call still holds.
      was_reset = _reset_peak_rss()
      if was_reset:
        record["rss_after_first_step_mb"] = _rss_mb()
  if was_reset:
    record["steady_peak_delta_mb"] = _maxrss_mb() - record["rss_baseline_mb"]
  record["rss_at_end_mb"] = _rss_mb()
  if args.variant == "xla_buffers":
    record.update(xla_buffer_assignment(args.xla_dump_dir, f"{args.kind}_step"))
  record["peak_delta_mb"] = record["maxrss_after_step_mb"][-1] - record["rss_baseline_mb"]
  record["peak_delta_after_first_step_mb"] = record["maxrss_after_step_mb"][0] - record["rss_baseline_mb"]
  if bfc:
    info = tf.config.experimental.get_memory_info("CPU:0")
    record["tensor_peak_mb"] = info["peak"] / 2**20
    record["tensor_peak_delta_mb"] = record["tensor_peak_mb"] - record["tensor_current_at_baseline_mb"]
  if gpus:
    info = tf.config.experimental.get_memory_info("GPU:0")
    record["gpu_peak_mb"] = info["peak"] / 2**20
    record["gpu_peak_delta_mb"] = record["gpu_peak_mb"] - record["gpu_current_at_baseline_mb"]
  record["measure"] = "gpu_peak_delta_mb" if gpus else "peak_delta_mb"
  return record


def start_config(args, kind: str, jit: bool, bfc: bool = False, variant: str = "current"):
  """Starts one configuration in a fresh process; returns (process, result path, start time, XLA dump
  folder or None)."""
  tag = variant.replace("+", "_")
  out = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                     f".memory_worker_{kind}_{int(jit)}_{int(bfc)}_{tag}_{os.getpid()}.json")
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--kind={kind}", f"--worker_out={out}",
         f"--seed={args.seed}", f"--variant={variant}"]
  for name in ("space", "teacher", "batch_size", "steps", "teacher_width"):
    value = getattr(args, name)
    if value is not None:
      cmd.append(f"--{name}={value}")
  if jit:
    cmd.append("--jit_compile")
  if args.tiny:
    cmd.append("--tiny")
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
  dump_dir = None
  if variant == "xla_buffers":
    dump_dir = tempfile.mkdtemp(prefix=".xla_dump_", dir=os.path.dirname(os.path.abspath(args.out)))
    cmd.append(f"--xla_dump_dir={dump_dir}")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_dump_to={dump_dir}".strip()
  if bfc:
    env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
  bc.log(f"worker: {kind} step ({variant}), jit_compile={jit}, CPU allocator {'BFC' if bfc else 'default'}")
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  return proc, out, time.time(), dump_dir


def finish_config(args, started_worker, kind: str, jit: bool) -> dict:
  """Waits for a worker and returns its record."""
  proc, out, start, dump_dir = started_worker
  try:
    _, stderr = proc.communicate(timeout=args.worker_timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
    raise RuntimeError(f"memory worker {kind}/jit={jit} ran over --worker_timeout={args.worker_timeout} s")
  finally:
    if dump_dir:
      shutil.rmtree(dump_dir, ignore_errors=True)  # Tens of MiB of HLO and LLVM IR text.
  if proc.returncode != 0:
    raise RuntimeError(f"memory worker {kind}/jit={jit} failed ({proc.returncode}):\n{stderr[-4000:]}")
  with open(out, encoding="utf-8") as f:
    record = json.load(f)
  os.remove(out)
  record["worker_wall_seconds"] = round(time.time() - start, 1)
  tensors = (f", tensor peak delta {record['tensor_peak_delta_mb']:.0f} MiB" if "tensor_peak_delta_mb" in record
             else "")
  if "steady_peak_delta_mb" in record:
    tensors += f", after the first step {record['steady_peak_delta_mb']:.0f} MiB"
  if "xla_program_mb" in record:
    tensors += (f", XLA program {record['xla_program_mb']:.0f} MiB (temporaries {record['xla_temp_mb']:.0f} MiB, "
                f"{record.get('xla_fusions', '?')} fusions)")
  bc.log(f"  {kind}/jit={jit}: peak delta {record[record['measure']]:.0f} MiB{tensors} (peak RSS after each "
         f"step {[round(v) for v in record['maxrss_after_step_mb']]} MiB, baseline {record['rss_baseline_mb']:.0f} MiB)")
  return record


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.worker:
    from rnascl_tf.runtime import artefacts as io_utils
    io_utils.atomic_write_json(args.worker_out, run_worker(args))
    return {}
  started = time.time()
  device = bc.device_info()
  modes = (args.jit_modes or ("off" if args.tiny else "off,on")).split(",")
  jits = [{"off": False, "on": True}[m] for m in modes]
  parallel = args.parallel or args.tiny
  import tensorflow as tf  # Only to ask whether a GPU is visible (the workers measure).

  on_gpu = bool(tf.config.list_physical_devices("GPU"))
  bfc_modes = [] if on_gpu else [m for m in (args.bfc_modes or "off").split(",") if m in ("off", "on")]
  if args.without_cl and not on_gpu and "off" not in bfc_modes:
    bfc_modes.append("off")  # The variant is compared with the BFC plain step at jit off.
  plan = [(f"{kind}/jit_{'on' if jit else 'off'}", kind, jit, False) for jit in jits for kind in KINDS]
  plan = [(key, kind, jit, bfc, "current") for key, kind, jit, bfc in plan]
  plan += [(f"{kind}/jit_{mode}/bfc_allocator", kind, mode == "on", True, "current")
           for mode in bfc_modes for kind in KINDS]
  if args.without_cl:
    plan.append((f"search/jit_off{'' if on_gpu else '/bfc_allocator'}/without_cl", "search", False, not on_gpu,
                 "without_cl"))
  xla_buffers = True in jits and not args.skip_xla_buffers
  if xla_buffers:
    plan += [(f"{kind}/jit_on/xla_buffers", kind, True, False, "xla_buffers") for kind in KINDS]
  records = {}
  if parallel:
    started_workers = {key: start_config(args, kind, jit, bfc, v) for key, kind, jit, bfc, v in plan}
    for key, kind, jit, _, _ in plan:
      records[key] = finish_config(args, started_workers[key], kind, jit)
  else:
    for key, kind, jit, bfc, v in plan:
      records[key] = finish_config(args, start_config(args, kind, jit, bfc, v), kind, jit)
  measure = records[plan[0][0]]["measure"]
  results = {"workers": records, "measure": measure, "ratios": {}}
  for mode in bfc_modes:
    search, plain = records[f"search/jit_{mode}/bfc_allocator"], records[f"plain/jit_{mode}/bfc_allocator"]
    results["ratios"][f"search_vs_plain_tensor_peak/jit_{mode}"] = (
        search["tensor_peak_delta_mb"] / plain["tensor_peak_delta_mb"])
    results["ratios"][f"search_vs_plain_rss_with_bfc_allocator/jit_{mode}"] = (
        search["peak_delta_mb"] / plain["peak_delta_mb"])
  for key, record in records.items():
    if record.get("variant", "current") == "without_cl":
      base = "search/jit_off/bfc_allocator" if record.get("cpu_allocator") == "bfc" else "search/jit_off"
      plain = records[base.replace("search", "plain", 1)]
      value = "tensor_peak_delta_mb" if record.get("cpu_allocator") == "bfc" else measure
      results["ratios"][f"search_vs_plain/{record['variant']}"] = record[value] / plain[value]
  targets = {}
  for mode in bfc_modes:
    targets[f"search_vs_plain_tensor_peak/jit_{mode}"] = bc.target(
        results["ratios"][f"search_vs_plain_tensor_peak/jit_{mode}"], args.target, "<=",
        f"search / plain step peak tensor bytes (BFC CPU allocator), jit_compile {mode}")
  for jit in jits:
    tag = f"jit_{'on' if jit else 'off'}"
    r = records[f"search/{tag}"][measure] / records[f"plain/{tag}"][measure]
    results["ratios"][f"search_vs_plain/{tag}"] = r
    results["ratios"][f"search_vs_plain_after_first_step/{tag}"] = (
        records[f"search/{tag}"]["peak_delta_after_first_step_mb"]
        / records[f"plain/{tag}"]["peak_delta_after_first_step_mb"])
    if "steady_peak_delta_mb" in records[f"search/{tag}"] and "steady_peak_delta_mb" in records[f"plain/{tag}"]:
      results["ratios"][f"search_vs_plain_steady_peak/{tag}"] = (
          records[f"search/{tag}"]["steady_peak_delta_mb"] / records[f"plain/{tag}"]["steady_peak_delta_mb"])
    targets[f"search_vs_plain_peak_memory/{tag}"] = bc.target(
        r, args.target, "<=", f"search / plain step peak memory delta ({measure}), jit_compile {tag[4:]}")
  if xla_buffers:
    search, plain = records["search/jit_on/xla_buffers"], records["plain/jit_on/xla_buffers"]
    results["ratios"]["search_vs_plain_xla_program/jit_on"] = search["xla_program_mb"] / plain["xla_program_mb"]
    results["ratios"]["search_vs_plain_xla_temporaries/jit_on"] = search["xla_temp_mb"] / plain["xla_temp_mb"]
    if "xla_fusions" in search and "xla_fusions" in plain:
      results["ratios"]["search_vs_plain_xla_fusions/jit_on"] = search["xla_fusions"] / plain["xla_fusions"]
    targets["search_vs_plain_xla_program/jit_on"] = bc.target(
        results["ratios"]["search_vs_plain_xla_program/jit_on"], args.target, "<=",
        "search / plain step tensor memory of the compiled program (XLA buffer assignment), jit_compile on")
  if len(jits) == 2:
    for kind in KINDS:
      results["ratios"][f"jit_on_vs_off/{kind}"] = records[f"{kind}/jit_on"][measure] / records[f"{kind}/jit_off"][measure]
  settings = {"space": bc.pick(args, "space", "s7", "tiny"), "teacher": bc.pick(args, "teacher", "resnet18", "small_cnn"),
              "teacher_width": bc.pick(args, "teacher_width", None, 0.25), "parallel_workers": parallel,
              "batch_size": bc.pick(args, "batch_size", 128, 4), "steps_per_worker": bc.pick(args, "steps", 5, 2),
              "jit_modes": modes, "bfc_allocator_modes": bfc_modes, "without_cl": args.without_cl,
              "xla_buffers": xla_buffers,
              "seed": args.seed}
  method = (
      "One fresh Python process per configuration. CPU: peak_delta_mb = ru_maxrss (getrusage, the "
      "process's resident high-water mark) after the last step call minus VmRSS just before the first "
      "call (after building the models and the data); it includes tracing, graph optimisation / XLA "
      "compilation, activations, gradients and allocator slack. GPU: gpu_peak_delta_mb = "
      "get_memory_info('GPU:0')['peak'] after the steps (reset_memory_stats at the baseline) minus "
      "'current' at the baseline. Ratios are search / plain on the same measure and jit mode. On CPU, "
      "the bfc_allocator workers rerun a jit mode with TF_CPU_ALLOCATOR_USE_BFC=true, which makes "
      "get_memory_info('CPU:0') available: tensor_peak_delta_mb = its 'peak' (bytes in use by "
      "tensors, reset at the baseline) minus 'current' at the baseline; unlike RSS it does not grow "
      "with allocator fragmentation over the steps. --without_cl: the search step traced with the "
      "cross-layer loss patched to zeros; search_vs_plain/without_cl is against the plain step of the "
      "same allocator. xla_buffers (jit on): a further worker per step runs with XLA_FLAGS=--xla_dump_to "
      "and reads the compiled step's buffer assignment: xla_program_mb = its 'Total bytes used' "
      "(parameters, outputs and the preallocated block of temporaries, packed by liveness), "
      "xla_temp_mb = that block; this is the compiled program's tensor memory, without the "
      "allocator's slack or the compiler's own working memory. steady_peak_delta_mb (CPU, Linux): after the first call, glibc's malloc_trim(0) returns "
      "freed heap to the system and the high-water mark is reset (/proc/self/clear_refs), so it is the "
      "peak of steps 2..n over the same baseline: what the steps need with everything the first call "
      "still holds (the compiled program, caches), without the freed memory of tracing and XLA "
      "compilation that glibc would otherwise keep resident; "
      "search_vs_plain_steady_peak is its ratio (reported, not a target).")
  payload = bc.write_result(args, "memory", settings, results, targets, method, started, device)
  bc.report(payload, args.out)
  return payload


if __name__ == "__main__":
  main()
