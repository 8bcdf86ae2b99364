"""The SavedModel: written at the end of training, loaded in a process that cannot import this
project, re-exported for older runs by training.export_main, bad paths refused in one line."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import DEFAULT_CHANNELS as CHANNELS
from conftest import run_module
from model import serializable  # noqa: F401  (custom objects for load_model)

# Runs in a fresh interpreter: imports of this project's packages fail (it is installed in
# editable mode, so a plain cwd/PYTHONPATH change would not keep it out).
_LOAD_WITHOUT_PROJECT = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("data_prep", "input_pipeline", "model", "training", "evaluation"):
      raise ImportError("the project must not be needed: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
(_, inputs), outputs = signature.structured_input_signature, signature.structured_outputs
x = np.load(sys.argv[2])
np.save(sys.argv[3], signature(image=tf.constant(x))["probabilities"].numpy())
print(json.dumps({"inputs": {k: [v.shape.as_list(), v.dtype.name] for k, v in inputs.items()},
                  "outputs": {k: [v.shape.as_list(), v.dtype.name] for k, v in outputs.items()},
                  "project_loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                                           ("data_prep", "input_pipeline", "model", "training"))}))
"""


@pytest.fixture(name="run_dir")
def _run_dir(tiny_run):
  return tiny_run[0]


def _serve_in_fresh_process(saved_model, x, tmp_path):
  """(signature description, probabilities) from plain TensorFlow in a fresh interpreter."""
  np.save(tmp_path / "x.npy", x)
  result = subprocess.run(
    [
      sys.executable,
      "-c",
      _LOAD_WITHOUT_PROJECT,
      str(saved_model),
      str(tmp_path / "x.npy"),
      str(tmp_path / "y.npy"),
    ],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2"),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1]), np.load(tmp_path / "y.npy")


def _keras_probabilities(model_file, x):
  return keras.models.load_model(model_file, compile=False).predict(x, verbose=0)


def test_training_exports_a_saved_model_that_serves_without_the_project(run_dir, tmp_path):
  saved_model = run_dir / "saved_model"
  assert (saved_model / "saved_model.pb").is_file() and (saved_model / "variables").is_dir()
  assert not [n for n in os.listdir(run_dir) if n.startswith(".saved_model")]  # no leftovers
  x = np.random.default_rng(0).normal(size=(3, 32, 32, CHANNELS)).astype(np.float32)
  signature, probabilities = _serve_in_fresh_process(saved_model, x, tmp_path)
  assert signature == {
    "inputs": {"image": [[None, 32, 32, CHANNELS], "float32"]},
    "outputs": {"probabilities": [[None, 32, 32, 1], "float32"]},
    "project_loaded": [],
  }
  expected = _keras_probabilities(run_dir / "best_model.keras", x)
  assert probabilities.shape == (3, 32, 32, 1)
  np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_export_main_exports_and_reexports_an_older_run(run_dir, tmp_path):
  older = tmp_path / "older"  # a run from before the export: only its checkpoint
  older.mkdir()
  shutil.copy(run_dir / "best_model.keras", older / "best_model.keras")
  for _ in range(2):  # the second export replaces the first
    result = run_module("training.export_main", f"--model_dir={older}", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported: {older / 'saved_model'}" in result.stdout
  assert sorted(os.listdir(older)) == ["best_model.keras", "saved_model"]
  x = np.random.default_rng(1).normal(size=(2, 32, 32, CHANNELS)).astype(np.float32)
  signature = tf.saved_model.load(str(older / "saved_model")).signatures["serving_default"]
  np.testing.assert_allclose(
    signature(image=tf.constant(x))["probabilities"].numpy(),
    _keras_probabilities(older / "best_model.keras", x),
    atol=1e-4,
  )


def _not_a_model(tmp_path):
  path = tmp_path / "notes.keras"
  path.write_text("not a model")
  return path, "not a Keras model (a .keras file is a zip archive; this is not)"


def _zip_without_model(tmp_path):
  path = tmp_path / "other.keras"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("readme.txt", "a zip, but no model")
  return path, "cannot be loaded as a Keras model"


def _saved_model_folder(tmp_path):
  folder = tmp_path / "serving" / "1"  # as TF Serving lays it out
  folder.mkdir(parents=True)
  (folder / "saved_model.pb").write_bytes(b"")
  return folder, "a SavedModel, for serving (docs/deploy.md); give the run folder"


def _empty_run_folder(tmp_path):
  (tmp_path / "run").mkdir()
  return tmp_path / "run" / "best_model.keras", "no such file (a run folder holds"


@pytest.mark.parametrize(
  "make",
  [
    lambda tmp_path: (tmp_path / "missing", "no such file or folder"),
    _empty_run_folder,
    _not_a_model,
    _zip_without_model,
    _saved_model_folder,
  ],
  ids=["missing", "empty_run_folder", "text_file", "zip_without_model", "saved_model"],
)
def test_a_bad_model_path_fails_in_one_line(tmp_path, make):
  path, reason = make(tmp_path)
  argument = path.parent if path.name == "best_model.keras" else path
  result = run_module("training.export_main", f"--model_dir={argument}", timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: {reason}")
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "saved_model").exists()


def test_a_destination_that_is_not_a_saved_model_is_left_alone(run_dir, tmp_path):
  notes = tmp_path / "notes.txt"
  notes.write_text("mine")
  result = run_module(
    "training.export_main", f"--model_dir={run_dir}", f"--output_dir={notes}", timeout=180
  )
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
    f"error: {notes}: exists and is not a SavedModel folder; not replaced"
  )
  assert notes.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes.txt"]
