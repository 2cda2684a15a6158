"""Two-process MultiWorkerMirroredStrategy runs of a tiny search on 127.0.0.1 (TF_CONFIG, free ports).

Each worker is `tests/multi_worker_job.py` (the search driver `searching.run_search`, one CPU replica
per worker, synchronized BatchNorm, global batch 16 = 8 per worker), started with subprocess,
bounded by timeouts and always killed in `finally`.

Tolerances: both workers end with bit-identical variables (the all-reduce hands both the same
sums). Against one process on one device with the same global batch 16, float32 sums over one
batch vs two half batches differ in the last bits: after 12 steps we saw <= 2e-6 on the variables,
<= 3e-7 on the tutor probabilities and <= 2e-7 relative on the logged losses; we assert 1e-4, 1e-5
and 1e-4, and the same widths and tutors. A run killed after its first checkpoint and restarted
must end like the uninterrupted one (it restores model, optimisers and random-generator states and
skips the consumed data): we saw bit-identical variables and assert 1e-5.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
import multi_worker_job

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 4, 3
JOB = os.path.join(helpers.REPO, "tests", "multi_worker_job.py")


def _free_ports(n: int):
  socks = [socket.socket() for _ in range(n)]
  try:
    for s in socks:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in socks]
  finally:
    for s in socks:
      s.close()


def _start(root, model_dir, teacher, tag: str):
  """Starts two workers of the tiny search; returns [(Popen, log path)]."""
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for i in range(2):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
    log = os.path.join(root, f"{tag}_worker{i}.log")
    with open(log, "w") as f:
      proc = subprocess.Popen(
          [sys.executable, JOB, "--stage=search", f"--model_dir={model_dir}", f"--teacher={teacher}",
           f"--dump={os.path.join(root, f'{tag}_worker{i}.npz')}", f"--epochs={EPOCHS}", f"--steps={STEPS}"],
          cwd=helpers.REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    procs.append((proc, log))
  return procs


def _kill(procs):
  for proc, _ in procs:
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
  for proc, _ in procs:
    try:
      proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      pass


def _logs(procs) -> str:
  out = []
  for _, log in procs:
    with open(log) as f:
      out.append(f"--- {log}\n" + f.read()[-4000:])
  return "\n".join(out)


def _wait(procs, timeout: float):
  deadline = time.time() + timeout
  for proc, _ in procs:
    try:
      proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      raise AssertionError(f"multi-worker run timed out after {timeout} s\n{_logs(procs)}")
  codes = [proc.returncode for proc, _ in procs]
  assert codes == [0, 0], f"worker exit codes {codes}\n{_logs(procs)}"


def _load(path):
  with np.load(path) as z:
    meta = json.loads(str(z["meta"]))
    variables = [z[k] for k in sorted(k for k in z.files if k != "meta")]
  return meta, variables


def _widths_and_tutors(g):
  return [b["width"] for b in g["blocks"]], [s["tutor"] for s in g["student_layers"]]


def _tutor_probs(g):
  return np.array([s["tutor_probs"] for s in g["student_layers"]])


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
  return helpers.save_tiny_teacher(str(tmp_path_factory.mktemp("mw_teacher") / "teacher.keras"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, teacher_path):
  """An uninterrupted two-worker search: (root, model_dir, [(meta, variables)] per worker)."""
  root = str(tmp_path_factory.mktemp("mw_full"))
  model_dir = os.path.join(root, "run")
  procs = _start(root, model_dir, teacher_path, "full")
  try:
    _wait(procs, timeout=420)
  finally:
    _kill(procs)
  return root, model_dir, [_load(os.path.join(root, f"full_worker{i}.npz")) for i in range(2)]


def test_two_workers_agree_and_match_one_process(uninterrupted, teacher_path, tmp_path):
  root, model_dir, ((meta0, vars0), (meta1, vars1)) = uninterrupted
  assert meta0["is_chief"] and not meta1["is_chief"]
  assert len(vars0) == len(vars1) > 0
  for a, b in zip(vars0, vars1):
    np.testing.assert_array_equal(a, b)
  assert meta0["genotype"] == meta1["genotype"]
  # Only the chief wrote: its genotype file is the genotype both workers derived.
  with open(os.path.join(model_dir, "genotype.json")) as f:
    assert json.load(f)["blocks"] == meta0["genotype"]["blocks"]
  assert not os.path.exists(os.path.join(model_dir, ".worker_tmp", "worker_1"))
  assert not os.path.exists(os.path.join(model_dir, ".scratch_ckpt"))

  single = multi_worker_job.run("search", str(tmp_path / "single"), teacher_path, EPOCHS, STEPS, "default")
  g_mw, g_one = meta0["genotype"], single["genotype"]
  assert _widths_and_tutors(g_mw) == _widths_and_tutors(g_one)
  np.testing.assert_allclose(_tutor_probs(g_mw), _tutor_probs(g_one), atol=1e-5)
  assert len(single["variables"]) == len(vars0)
  for a, b in zip(vars0, single["variables"]):
    np.testing.assert_allclose(a, b, atol=1e-4)
  for h_mw, h_one in zip(meta0["history"], single["history"]):
    for key in ("loss", "arch_loss", "kl", "cl"):
      assert h_mw[key] == pytest.approx(h_one[key], rel=1e-4), key


def test_killed_workers_resume_to_the_same_genotype(uninterrupted, teacher_path, tmp_path):
  _, full_dir, ((full_meta, full_vars), _) = uninterrupted
  root = str(tmp_path)
  model_dir = os.path.join(root, "run")
  state_path = os.path.join(model_dir, "run_state.json")
  procs = _start(root, model_dir, teacher_path, "killed")
  try:
    deadline = time.time() + 360
    done = 0
    while time.time() < deadline and all(p.poll() is None for p, _ in procs):
      if os.path.exists(state_path):
        with open(state_path) as f:
          done = json.load(f).get("epochs_completed", 0)
        if done >= 1:
          break
      time.sleep(0.02)
  finally:
    _kill(procs)  # Both workers, mid-epoch: the chief and the other worker are preempted together.
  with open(state_path) as f:
    done = json.load(f)["epochs_completed"]
  assert 1 <= done < EPOCHS, f"the kill came too late or too early ({done} epochs done)\n{_logs(procs)}"

  procs = _start(root, model_dir, teacher_path, "resumed")
  try:
    _wait(procs, timeout=420)
  finally:
    _kill(procs)
  with open(procs[0][1]) as f:
    assert f"after epoch {done}/{EPOCHS}" in f.read()
  with open(os.path.join(full_dir, "genotype.json")) as f1, open(os.path.join(model_dir, "genotype.json")) as f2:
    g_full, g_resumed = json.load(f1), json.load(f2)
  assert _widths_and_tutors(g_full) == _widths_and_tutors(g_resumed)
  np.testing.assert_allclose(_tutor_probs(g_full), _tutor_probs(g_resumed), atol=1e-5)
  (meta0, vars0), (meta1, vars1) = (_load(os.path.join(root, f"resumed_worker{i}.npz")) for i in range(2))
  for a, b, c in zip(full_vars, vars0, vars1):
    np.testing.assert_array_equal(b, c)
    np.testing.assert_allclose(a, b, atol=1e-5)
