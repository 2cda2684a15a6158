"""Every flagfile parses with its entry point's flags and has the required header comment."""

import glob
import os
import re

import pytest
from absl import flags

import helpers

FLAGFILES = sorted(glob.glob(os.path.join(helpers.REPO, "flags", "*.flags")))


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_flagfile_header_and_flags(path):
  text = open(path).read()
  header = [l for l in text.splitlines() if l.startswith("#")]
  command = re.search(r"python -m (rnascl_tf\.\w+) --flagfile=flags/" + re.escape(os.path.basename(path)), text)
  assert command, "the header must give the command that runs this flagfile"
  assert any("Expected" in l for l in header), "the header must state the expected time and result"
  module = __import__(command.group(1), fromlist=["define_flags"])
  fv = flags.FlagValues()
  module.define_flags(fv)
  for line in text.splitlines():
    if line.strip() and not line.startswith("#"):
      assert "#" not in line, f"absl flagfiles have no trailing comments: {line!r}"
      name = line.split("=", 1)[0].lstrip("-")
      assert name in fv, f"{os.path.basename(path)}: unknown flag --{name}"
  fv(["prog", f"--flagfile={path}"])  # Every value parses with its flag's type.
  assert fv.is_parsed()
