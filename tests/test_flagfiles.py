"""Every flagfile parses with its entry point's flags and has the required header comment."""

import glob
import os
import re
import subprocess
import sys

import pytest

import helpers

FLAGFILES = sorted(glob.glob(os.path.join(helpers.REPO, "flags", "*.flags")))


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_header_and_flags(path):
  text = open(path).read()
  header = [l for l in text.splitlines() if l.startswith("#")]
  command = re.search(r"python -m (rnascl_tf\.\w+) --flagfile=flags/" + re.escape(os.path.basename(path)), text)
  assert command, "the header must give the command that runs this flagfile"
  assert any("Expected" in l for l in header), "the header must state the expected time and result"
  module = __import__(command.group(1), fromlist=["FLAGS"])
  fv = module.FLAGS
  for line in text.splitlines():
    if line.strip() and not line.startswith("#"):
      assert "#" not in line, f"absl flagfiles have no trailing comments: {line!r}"
      name = line.split("=", 1)[0].lstrip("-")
      assert name in fv, f"{os.path.basename(path)}: unknown flag --{name}"


@pytest.mark.parametrize("first, then", [("rnascl_tf.pipeline", "rnascl_tf.search"),
                                         ("rnascl_tf.evaluate", "rnascl_tf.train"),
                                         ("rnascl_tf.train", "rnascl_tf.evaluate")])
def test_entry_points_define_their_flags_whatever_the_import_order(first, then):
  # Shared names (--teacher_path, --verbose, --seed, --eps) are defined by whichever module comes
  # first; the second must neither fail nor skip the rest of its group.
  code = (f"import {first}, {then}\nfrom absl import flags\n"
          "print(sorted(n for n in ('teacher_arch', 'teacher_layers', 'teacher_path', 'verbose', 'attacks', "
          "'genotype', 'search_space') if n in flags.FLAGS))")
  out = subprocess.run([sys.executable, "-c", code], cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  defined = set(eval(out.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own printed list
  assert {"teacher_arch", "teacher_layers", "teacher_path", "verbose"} <= defined
