"""rnascl_tf.runtime.tf_console: TensorFlow's start-up lines stay off the console of our commands."""

import os
import subprocess
import sys

import helpers
from rnascl_tf.runtime import tf_console

NOISE = ("cuInit", "oneDNN", "absl::InitializeLog", "cuda drivers")


def test_startup_lines_are_recognised_and_nothing_else():
  assert tf_console.is_startup_noise("E0000 00:00:1796330699.748650 8095 cuda_platform.cc:52] failed call to cuInit: "
                                     "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
  assert tf_console.is_startup_noise("I0000 00:00:1796330697.251599 8095 port.cc:153] oneDNN custom operations are on.")
  assert not tf_console.is_startup_noise("error: --model: no such file 'x.keras'")
  assert not tf_console.is_startup_noise("ResourceExhaustedError: OOM when allocating tensor")


def test_filtered_stderr_keeps_every_other_line(capfd):
  with tf_console.filtered_stderr():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796330697.252167 8095 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")
    os.write(2, b"a real problem\n")
  assert capfd.readouterr().err == "a real problem\n"


def _run(*args):
  env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", tf_console.KEEP_ENV)}
  return subprocess.run([sys.executable, "-m", "rnascl_tf.list_layers", *args], cwd=helpers.REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_an_entry_point_prints_only_its_own_lines(tmp_path):
  not_a_model = tmp_path / "notes.keras"
  not_a_model.write_text("not a model")
  bad = _run(f"--model={not_a_model}")  # Fails after TensorFlow is imported, in the Keras loader.
  assert bad.returncode == 2 and bad.stderr.startswith("error: "), bad.stderr[-2000:]
  assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr[-2000:]
  good = _run(f"--model={helpers.save_tiny_teacher(str(tmp_path / 'teacher.keras'))}")
  assert good.returncode == 0 and "conv taps" in good.stdout, good.stderr[-2000:]
  for out in (bad, good):
    assert not [line for line in out.stderr.splitlines() if any(n in line for n in NOISE)], out.stderr[-2000:]
