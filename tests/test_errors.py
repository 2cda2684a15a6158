"""Tests for rnascl_tf/errors.py: the exit status of argparse scripts."""

import pytest

from rnascl_tf.errors import UserInputError, exit_with_status


def _bad():
  raise UserInputError("--data: no such file 'x'")


@pytest.mark.parametrize("main,status,stderr", [
    (lambda: 0, 0, ""),
    (lambda: None, 0, ""),
    (lambda: 1, 1, ""),
    (_bad, 2, "error: --data: no such file 'x'\n"),
])
def test_exit_with_status(main, status, stderr, capsys):
  with pytest.raises(SystemExit) as e:
    exit_with_status(main)
  assert e.value.code == status
  assert capsys.readouterr().err == stderr


def test_exit_with_status_lets_other_errors_through():
  def broken():
    raise RuntimeError("a bug, not bad input")

  with pytest.raises(RuntimeError, match="a bug"):
    exit_with_status(broken)
