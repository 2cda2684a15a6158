"""Structure of the package: import graph without cycles, module size, no private imports, pyproject.toml."""

import ast
import importlib
import os
import re

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11.

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE = "rnascl_tf"
MAX_MODULE_LINES = 450


def _python_files(folder: str) -> list:
  """Returns every .py file under ROOT/folder, sorted, caches skipped."""
  found = []
  for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
  return found


def _module_name(path: str) -> str:
  """Returns the dotted module name of a file of the package (a package's __init__.py is the package)."""
  parts = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _package_modules() -> dict:
  """Returns {module name: path} of every module of rnascl_tf."""
  return {_module_name(p): p for p in _python_files(PACKAGE)}


def _parse(path: str) -> ast.Module:
  with open(path, encoding="utf-8") as f:
    return ast.parse(f.read(), filename=path)


def _from_module(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
  """Returns the absolute module a `from X import ...` names (relative imports resolved against the importer)."""
  if not node.level:
    return node.module or ""
  base = importer.split(".") if is_package else importer.split(".")[:-1]
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _is_ours(module: str) -> bool:
  return module == PACKAGE or module.startswith(PACKAGE + ".")


def _imported_modules(path: str, modules: dict) -> set:
  """Returns the rnascl_tf modules a file imports, at module level or inside functions.

  `from rnascl_tf.x import y` is the module rnascl_tf.x.y when that file exists, else rnascl_tf.x;
  `import rnascl_tf.x.y` is the longest prefix that is a module.
  """
  importer = _module_name(path) if _is_ours(_module_name(path)) else ""
  is_package = path.endswith("__init__.py")
  edges = set()
  for node in ast.walk(_parse(path)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        parts = alias.name.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        edges.update(next(([p] for p in prefixes if _is_ours(p) and p in modules), []))
    elif isinstance(node, ast.ImportFrom):
      source = _from_module(node, importer, is_package)
      if not _is_ours(source):
        continue
      for alias in node.names:
        sub = f"{source}.{alias.name}"
        edges.add(sub if sub in modules else source)
  edges.discard(importer)
  return edges


def _find_cycle(graph: dict):
  """Returns one cycle of the graph as a list of nodes (first == last), or None."""
  state = {}  # Absent: unvisited; 1: on the DFS path; 2: done.
  for start in sorted(graph):
    if start in state:
      continue
    path, stack = [start], [iter(sorted(graph[start]))]
    state[start] = 1
    while stack:
      nxt = next(stack[-1], None)
      if nxt is None:
        state[path.pop()] = 2
        stack.pop()
      elif state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      elif nxt not in state:
        state[nxt] = 1
        path.append(nxt)
        stack.append(iter(sorted(graph.get(nxt, ()))))
  return None


def test_find_cycle_reports_the_path():
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_import_graph_has_no_cycle():
  modules = _package_modules()
  assert len(modules) > 20, sorted(modules)
  graph = {name: _imported_modules(path, modules) for name, path in modules.items()}
  assert graph["rnascl_tf.search"] or graph["rnascl_tf.pipeline"], "the parser found no import at all"
  cycle = _find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_the_line_limit():
  too_long = {}
  for path in _python_files(PACKAGE):
    with open(path, encoding="utf-8") as f:
      lines = sum(1 for _ in f)
    if lines > MAX_MODULE_LINES:
      too_long[os.path.relpath(path, ROOT)] = lines
  assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_private_name_imported_from_the_package():
  modules = _package_modules()
  offenders = []
  for folder in (PACKAGE, "scripts", "tests"):
    for path in _python_files(folder):
      importer = _module_name(path)
      for node in ast.walk(_parse(path)):
        if not isinstance(node, ast.ImportFrom):
          continue
        source = _from_module(node, importer, path.endswith("__init__.py"))
        if not _is_ours(source):
          continue
        for alias in node.names:
          private = alias.name.startswith("_") and not alias.name.endswith("__")
          if private and f"{source}.{alias.name}" not in modules:
            offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: from {source} import {alias.name}")
  assert not offenders, "private names imported:\n" + "\n".join(offenders)


def _pyproject() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _normalised(name: str) -> str:
  """PEP 503 name normalisation: `importlib_resources` and `importlib-resources` are one package."""
  return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements) -> dict:
  """Returns {normalised name (with extras): pinned version} of `name==version` lines; fails on any other."""
  pins = {}
  for line in requirements:
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-r"):
      continue
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[A-Za-z0-9_,\-]+\])?\s*==\s*([A-Za-z0-9_.+\-]+)", line)
    assert match, f"not an exact pin: {line!r}"
    pins[_normalised(match.group(1)) + (match.group(2) or "")] = match.group(3)
  return pins


def _requirements(name: str) -> dict:
  with open(os.path.join(ROOT, name), encoding="utf-8") as f:
    return _pins(f)


def test_pinned_dependencies_equal_the_requirements_files():
  project = _pyproject()["project"]
  assert _pins(project["dependencies"]) == _requirements("requirements.txt")
  assert _pins(project["optional-dependencies"]["test"]) == _requirements("requirements-test.txt")
  assert _pins(project["optional-dependencies"]["gpu"]) == {
      "tensorflow[and-cuda]": _requirements("requirements.txt")["tensorflow"]}


def test_version_matches_the_package():
  import rnascl_tf
  assert _pyproject()["project"]["version"] == rnascl_tf.__version__


def test_console_scripts_point_at_callable_run():
  scripts = _pyproject()["project"]["scripts"]
  assert set(scripts) == {"rnascl-teacher", "rnascl-search", "rnascl-retrain", "rnascl-evaluate", "rnascl-export",
                          "rnascl-pipeline", "rnascl-layers"}
  for script, target in scripts.items():
    module_name, _, attr = target.partition(":")
    assert attr == "run", f"{script}: {target}"
    assert module_name in _package_modules(), f"{script}: no module {module_name}"
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr, None)), f"{script}: {module_name} has no callable {attr}"


def test_package_discovery_takes_every_subpackage():
  find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
  assert find["include"] == [PACKAGE, PACKAGE + ".*"]
  assert {"tests", "scripts"} <= set(find["exclude"])
  for name, path in _package_modules().items():
    if path.endswith("__init__.py"):
      continue
    assert os.path.exists(os.path.join(os.path.dirname(path), "__init__.py")), f"{name}: folder has no __init__.py"
