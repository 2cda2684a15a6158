"""rnascl_tf.cli: flag groups, flags -> configs, and the runner's exit codes and one-line errors."""

import os
import subprocess
import sys

import pytest
from absl import flags

import helpers
from rnascl_tf import cli, search
from rnascl_tf.configs import SearchConfig
from rnascl_tf.errors import UserInputError


def _parsed(define, *args):
  fv = flags.FlagValues()
  define(fv)
  fv(["prog", *args])
  return fv


def test_search_flags_become_one_search_config():
  fv = _parsed(search.define_flags, "--tau0=4", "--tau_decay=auto", "--tau_min=0.5", "--gamma_cl=2",
               "--search_space=s3", "--arch_learning_rate=0.05")
  cfg = cli.search_config(fv)
  assert isinstance(cfg, SearchConfig) and cfg.tau_decay is None and cfg.tau0 == 4.0 and cfg.tau_min == 0.5
  assert cfg.distill.gamma_cl == 2.0 and cfg.space == "s3" and cfg.arch_learning_rate == 0.05
  assert cli.search_config(_parsed(search.define_flags, "--tau_decay=0.25")).tau_decay == 0.25
  with pytest.raises(UserInputError, match="--tau_decay"):
    cli.search_config(_parsed(search.define_flags, "--tau_decay=fast"))


def test_verbose_is_auto_by_default_and_checked():
  assert cli.run_config(_parsed(search.define_flags, "--model_dir=a")).verbose == "auto"
  assert cli.run_config(_parsed(search.define_flags, "--model_dir=a", "--verbose=2")).verbose == 2
  with pytest.raises(UserInputError, match="--verbose must be auto, 0, 1 or 2, got 'loud'"):
    cli.run_config(_parsed(search.define_flags, "--model_dir=a", "--verbose=loud"))


def test_own_flag_values_are_exactly_the_entry_points_flags():
  fv = _parsed(search.define_flags, "--epochs=3")
  record = cli.own_flag_values(fv, search.define_flags)
  assert record["epochs"] == 3 and record["learning_rate"] == 0.004 and "tau0" in record
  assert not {"flagfile", "logtostderr", "v"} & set(record)


@pytest.mark.parametrize("args, message", [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--epochs=ten"], "--epochs=ten"),
    (["positional"], "unexpected positional arguments"),
    (["--model_dir=x", "--teacher_path=t.keras", "--tau_min=0"], "--tau_min must be > 0"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
  out = subprocess.run([sys.executable, "-m", "rnascl_tf.search", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": helpers.REPO})
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
  assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


def test_help_lists_the_entry_points_flags():
  out = subprocess.run([sys.executable, "-m", "rnascl_tf.search", "--help"], cwd=helpers.REPO, capture_output=True,
                       text=True, timeout=300)
  assert "--tau0" in out.stdout and "--teacher_path" in out.stdout and "--search_space" in out.stdout
