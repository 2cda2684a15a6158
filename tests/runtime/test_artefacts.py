"""Tests for rnascl_tf.runtime.artefacts: file modes of atomic writes and the output-folder check."""

import contextlib
import os
import stat

import pytest

import helpers
from rnascl_tf.errors import UserInputError
from rnascl_tf.runtime import artefacts


@contextlib.contextmanager
def _umask(mask):
  old = os.umask(mask)
  try:
    yield
  finally:
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=oct)
def test_artefacts_get_the_mode_of_any_new_file(tmp_path, mask, mode):
  with _umask(mask):
    artefacts.atomic_write_json(str(tmp_path / "eval.json"), {"a": 1})
    artefacts.atomic_write_text(str(tmp_path / "report.md"), "# r\n")
    artefacts.atomic_write_bytes(str(tmp_path / "widths.png"), b"\x89PNG")
    if mask == 0o027:  # One Keras save is enough (~2 s).
      artefacts.atomic_save_keras(helpers.tiny_teacher(), str(tmp_path / "teacher.keras"))
    assert artefacts.current_umask() == mask
  modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
  assert set(modes.values()) == {mode} and len(modes) == (4 if mask == 0o027 else 3), modes


def test_writable_dir_check_accepts_new_and_existing_folders_and_leaves_nothing(tmp_path):
  artefacts.check_writable_dir(str(tmp_path / "a" / "b"), "--model_dir")
  artefacts.check_writable_dir(str(tmp_path), "--model_dir")
  artefacts.check_writable_dir(None, "--output_dir")
  assert list(tmp_path.iterdir()) == []  # Neither the folders nor the probe files.


def test_writable_dir_check_names_the_flag_and_the_file_in_the_way(tmp_path):
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(UserInputError, match=r"^--model_dir: cannot create '.*notes\.txt/run': '.*notes\.txt' is a "
                                           r"file, not a folder; expected a folder to write into$"):
    artefacts.check_writable_dir(str(tmp_path / "notes.txt" / "run"), "--model_dir")
  with pytest.raises(UserInputError, match=r"^--export_base: '.*notes\.txt' is a file, not a folder"):
    artefacts.check_writable_dir(str(tmp_path / "notes.txt"), "--export_base")
  with pytest.raises(UserInputError, match=r"^--run_dir: the folder name 'xxxx.*longer than \d+ bytes"):
    artefacts.check_writable_dir(str(tmp_path / ("x" * 300) / "run"), "--run_dir")
  assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
def test_writable_dir_check_refuses_a_place_nobody_can_write():
  # sysfs refuses new files even to root (the tests run as root, for whom permission bits do not count).
  with pytest.raises(UserInputError, match=r"^--output_dir: cannot write into '/sys' \(to create '/sys/x/eval' in "
                                           r"it\): .*; expected a writable folder$"):
    artefacts.check_writable_dir("/sys/x/eval", "--output_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_writable_dir_check_refuses_a_read_only_folder(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o555)
  try:
    with pytest.raises(UserInputError, match=r"^--model_dir: cannot write into '.*ro' \(to create .*Permission"):
      artefacts.check_writable_dir(str(ro / "run"), "--model_dir")
  finally:
    ro.chmod(0o755)
