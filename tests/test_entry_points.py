"""Entry points define their flags on the FlagValues they are given, whatever was imported before them.

Each import order runs in a fresh interpreter: absl's global FLAGS is process state, so an order tested in
this process would see the flags (or the modules) every earlier test left behind.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENTRY_POINTS = ("evaluate", "export", "list_layers", "pipeline", "retrain", "search", "train", "train_teacher")
ORDERS = tuple((name,) for name in ENTRY_POINTS) + (ENTRY_POINTS, ENTRY_POINTS[::-1])
_MARKER = "ENTRY_POINT_DUMP "

# Runs in the fresh interpreter: imports the modules in the order of argv[1], then dumps each module's flags
# ({name: default}) defined twice on new FlagValues, and the global FLAGS before and after.
_CHILD = r"""
import importlib, json, sys, traceback
from absl import app, flags, logging  # absl's own flags: the baseline of the global FLAGS.

def names(fv):
  return sorted(name for name in fv if fv[name].name == name)  # Short names (-v) are aliases.

def dump(module):
  fv = flags.FlagValues()
  module.define_flags(fv)
  return {name: fv[name].default for name in names(fv)}

out = {"baseline": names(flags.FLAGS), "dumps": {}, "redefined": {}, "callables": {}, "errors": {}}
modules = {}
for name in json.loads(sys.argv[1]):
  try:
    modules[name] = importlib.import_module("rnascl_tf." + name)
  except Exception:
    out["errors"][name] = traceback.format_exc(limit=-2)
out["after_import"] = names(flags.FLAGS)
for name, module in modules.items():
  out["callables"][name] = {attr: callable(getattr(module, attr, None)) for attr in ("define_flags", "main", "run")}
  try:
    out["dumps"][name] = dump(module)
    out["redefined"][name] = dump(module) == out["dumps"][name]
  except Exception:
    out["errors"][name] = traceback.format_exc(limit=-2)
out["after_define"] = names(flags.FLAGS)
print(%r + json.dumps(out, default=repr))
""" % _MARKER


def _run_order(order: tuple) -> dict:
  """Imports `order` in a fresh interpreter; returns its dump, or {"error": ...} with the child's stderr."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(order)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith(_MARKER)]
  if proc.returncode or not lines:
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
  return json.loads(lines[-1][len(_MARKER):])


@pytest.fixture(scope="module")
def results() -> dict:
  """{order: dump} of every order; two interpreters at a time (the machine has two cores)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    dumps = dict(zip(ORDERS, pool.map(_run_order, ORDERS)))
  crashed = {" ".join(order): out["error"] for order, out in dumps.items() if "error" in out}
  assert not crashed, "interpreters that crashed:\n" + "\n".join(f"[{k}] {v}" for k, v in crashed.items())
  return dumps


def _flags_of(out: dict, name: str) -> dict:
  """Returns the {flag: default} dump of entry point `name`, failing with its traceback if it has none."""
  assert name in out["dumps"], f"{name}: {out['errors'].get(name, 'not imported')}"
  return out["dumps"][name]


def test_every_entry_point_imports_and_defines_its_flags(results):
  errors = {f"{name} (order {' '.join(order)})": error
            for order, out in results.items() for name, error in out["errors"].items()}
  assert not errors, "\n".join(f"{k}:\n{v}" for k, v in errors.items())
  for name, callables in results[ENTRY_POINTS]["callables"].items():
    assert all(callables.values()), f"{name}: {callables}"


def test_importing_or_defining_touches_no_global_flag(results):
  for order, out in results.items():
    assert out["after_import"] == out["baseline"], (
        f"importing {order} defined global flags: {sorted(set(out['after_import']) - set(out['baseline']))}")
    assert out["after_define"] == out["baseline"], (
        f"define_flags of {order} defined global flags: {sorted(set(out['after_define']) - set(out['baseline']))}")


def test_every_order_gives_the_same_flags(results):
  for name in ENTRY_POINTS:
    alone = _flags_of(results[(name,)], name)
    assert alone, f"{name}: define_flags defined no flag"
    for order, out in results.items():
      if name in order:
        assert _flags_of(out, name) == alone, f"{name}: flags differ when imported in the order {order}"
        assert out["redefined"][name], f"{name}: a second define_flags on a new FlagValues gave other flags"


def test_defaults(results):
  out = results[ENTRY_POINTS]
  search, retrain = _flags_of(out, "search"), _flags_of(out, "retrain")
  assert (search["learning_rate"], search["optimizer"], search["epochs"]) == (0.004, "adam", 10)
  assert (retrain["learning_rate"], retrain["objective"]) == (0.1, "rslad")
  assert _flags_of(out, "train_teacher")["adv_mode"] == "pgd"
  assert _flags_of(out, "train") == retrain, "train is an alias of retrain: same flags and defaults"
  assert "model_dir" in search and "genotype" in retrain and "model" in _flags_of(out, "evaluate")
