"""Imports only go down the layers: data_prep -> input_pipeline -> model -> training ->
evaluation -> the mains, so each layer can be read, tested and reused without the ones above."""

import ast
import pathlib

from conftest import REPO_ROOT

LAYERS = ("data_prep", "input_pipeline", "model", "training", "evaluation")


def _imports(path):
  """Top-level package of every module `path` imports, also inside functions."""
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      yield from (alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module.split(".")[0]


def upward_imports(root):
  """(file, imported package) for every import of a higher layer or of a main."""
  rank = {layer: i for i, layer in enumerate(LAYERS)}
  found = []
  for layer in LAYERS:
    for path in sorted((root / layer).rglob("*.py")):
      for package in _imports(path):
        if rank.get(package, -1) > rank[layer] or package.endswith("_main"):
          found.append((str(path.relative_to(root)), package))
  return found


def test_no_layer_imports_a_higher_one():
  assert upward_imports(pathlib.Path(REPO_ROOT)) == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
  for layer in LAYERS:
    (tmp_path / layer).mkdir()
  (tmp_path / "model" / "bad.py").write_text("def f():\n  from training import trainer\n")
  (tmp_path / "data_prep" / "good.py").write_text("import numpy\nfrom data_prep import errors\n")
  assert upward_imports(tmp_path) == [("model/bad.py", "training")]
