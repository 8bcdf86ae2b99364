"""Finds and loads a trained model file, failing in one line that names the file and reason.

Shared by fine-tuning (--init_from) and the SavedModel export, so both accept the same paths.
"""

import os

BEST_MODEL = "best_model.keras"
SUFFIXES = (".keras", ".h5")


class ModelFileError(ValueError):
  """A model path that does not exist or does not hold a Keras model (printed as one line)."""


def resolve(path):
  """`path` itself for a model file, `<path>/best_model.keras` for a run folder."""
  if is_saved_model(path):
    raise ModelFileError(
      f"{path}: a SavedModel, for serving (docs/deploy.md); give the run "
      f"folder that holds it, or its {BEST_MODEL}"
    )
  if os.path.isdir(path):
    best = os.path.join(path, BEST_MODEL)
    if not os.path.isfile(best):
      raise ModelFileError(
        f"{best}: no such file (a run folder holds the {BEST_MODEL} that train_main.py writes)"
      )
    return best
  if not os.path.exists(path):
    raise ModelFileError(f"{path}: no such file or folder")
  if not path.endswith(SUFFIXES):
    raise ModelFileError(f"{path}: not a model file (expected .keras, .h5 or a run folder)")
  return path


def is_saved_model(path):
  return os.path.isfile(os.path.join(path, "saved_model.pb"))


def load(path):
  """The uncompiled Keras model at `path` (a file or a run folder)."""
  path = resolve(path)
  _check_container(path)  # both before TensorFlow loads: a wrong path fails at once
  import keras
  from model import serializable  # noqa: F401  (custom objects for load_model)

  try:
    return keras.models.load_model(path, compile=False)
  except Exception as error:  # a truncated or foreign file: Keras raises many kinds
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise ModelFileError(f"{path}: cannot be loaded as a Keras model ({reason})") from None


def _check_container(path):
  """A clearer reason than Keras gives for a file that is not even the right container."""
  import zipfile
  import h5py

  if path.endswith(".keras") and not zipfile.is_zipfile(path):
    raise ModelFileError(f"{path}: not a Keras model (a .keras file is a zip archive; this is not)")
  if path.endswith(".h5") and not h5py.is_hdf5(path):
    raise ModelFileError(f"{path}: not a Keras model (a .h5 file is HDF5; this is not)")
