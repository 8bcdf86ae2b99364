"""The SavedModel for TF Serving and other TensorFlow runtimes: preprocessed slices in,
probabilities out.

`<model_dir>/saved_model/` loads with plain `tf.saved_model.load`, without this project: its
`serving_default` signature takes `image`, float32 [N, H, W, C] (slices preprocessed as the
run's dataset.json records), and returns `probabilities`, float32 [N, H, W, K].
"""

import os
import shutil
import tempfile

FOLDER = "saved_model"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class ExportError(ValueError):
  """A destination that is not ours to replace (printed as one line)."""


def export(model, path):
  """Writes the SavedModel of `model` to `path`: a reader never finds half of one (the new
  export is renamed into place; an older export is moved aside first and deleted after)."""
  import keras
  import tensorflow as tf
  from training import model_files

  if os.path.exists(path) and not (
    os.path.isdir(path) and (not os.listdir(path) or model_files.is_saved_model(path))
  ):
    raise ExportError(f"{path}: exists and is not a SavedModel folder; not replaced")
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)

    def serve(image):
      return {OUTPUT_NAME: tf.cast(model(image, training=False), tf.float32)}

    # "serve" is written as "serving_default" too: the signature TF Serving calls by default.
    archive.add_endpoint("serve", serve, input_signature=[spec])
    archive.write_out(tmp, verbose=False)
    _replace_folder(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _replace_folder(new, path):
  """Renames `new` to `path`; an existing `path` is moved aside first and deleted last."""
  old = None
  if os.path.exists(path):
    old = new[: -len(".tmp")] + ".old"
    os.rename(path, old)
  os.rename(new, path)
  if old:
    shutil.rmtree(old)


def export_run(model_path, path=None):
  """Exports the model file (or run folder) `model_path` to `path`, by default `saved_model/`
  beside the file; returns `path`."""
  from training import model_files

  model_path = model_files.resolve(model_path)
  path = path or os.path.join(os.path.dirname(os.path.abspath(model_path)), FOLDER)
  export(model_files.load(model_path), path)
  return path
