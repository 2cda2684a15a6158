"""The docstring examples of the models, nas, distill and runtime packages and of the robust trainer run."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import rnascl_tf.distill
import rnascl_tf.models
import rnascl_tf.nas
import rnascl_tf.runtime


def _modules():
  names = [f"{pkg.__name__}.{info.name}"
           for pkg in (rnascl_tf.models, rnascl_tf.nas, rnascl_tf.distill, rnascl_tf.runtime)
           for info in pkgutil.iter_modules(pkg.__path__)]
  return sorted(names) + ["rnascl_tf.robust.trainer"]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
  assert result.failed == 0, (f"{result.failed} of {result.attempted} docstring examples of {name} failed "
                              f"(see them with: python -m doctest -v {module.__file__})")
  if ">>>" in inspect.getsource(module):
    assert result.attempted > 0, f"{name} has examples that doctest did not find"
