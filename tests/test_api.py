"""The Python API: its documented example runs, and the README shows that same example."""

import doctest
import os
import re

import pytest

import helpers
from rnascl_tf import api


def _example(text: str) -> str:
  return "\n".join(l for l in text.splitlines() if l.lstrip().startswith((">>>", "...")))


def test_readme_shows_the_api_example():
  readme = open(os.path.join(helpers.REPO, "README.md")).read()
  block = re.search(r"```python\n(.*?)```", readme, re.S)
  assert block, "README.md must show the Python API example in a ```python block"
  assert _example(block.group(1)).strip() == _example(api.__doc__).strip().replace("\n    ", "\n")


@pytest.mark.slow
def test_api_example_runs():
  result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
  assert result.attempted >= 8 and result.failed == 0
