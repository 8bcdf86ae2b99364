"""Starts a run from a trained model's weights (--init_from) and freezes its encoder.

The new run builds its model from its own flags; the source must fit it exactly (input
channels, image size, outputs, and every layer with weights), else the run is refused in one
line, because a partial copy would silently train something else than the user asked for.
"""

from absl import logging

from model import blocks
from model import contract
from training import model_files


def _describe(shape):
  return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def load_source(path, *, input_shape, output_shape):
  """The source model at `path` (file or run folder), checked against the new run's
  `input_shape` and `output_shape` ([N, H, W, C] and [N, H, W, K], batch None).

  Raises:
    model_files.ModelFileError: missing, not a model, or shapes that do not fit.
  """
  source = model_files.load(path)
  fits = contract.shapes_fit(source.input_shape, input_shape) and contract.shapes_fit(
    source.output_shape, output_shape
  )
  if not fits:
    raise model_files.ModelFileError(
      f"{model_files.resolve(path)}: the model maps {_describe(source.input_shape)} -> "
      f"{_describe(source.output_shape)}; this run needs {_describe(input_shape)} -> "
      f"{_describe(output_shape)} (image size, input channels, outputs)"
    )
  return source


def _weighted_layers(model):
  return {layer.name: layer for layer in model.layers if layer.weights}


def copy_weights(source, target, path):
  """Copies every weight of `source` into `target`, layer by layer by name.

  Raises:
    model_files.ModelFileError: a layer missing on one side or shaped differently.
  """
  theirs, ours = _weighted_layers(source), _weighted_layers(target)
  for name, layer in ours.items():
    other = theirs.get(name)
    mine = [tuple(w.shape) for w in layer.weights]
    found = [tuple(w.shape) for w in other.weights] if other is not None else None
    if found != mine:
      where = "has no such layer" if other is None else f"has it with weights {found}"
      raise model_files.ModelFileError(
        f"{path}: this run's layer {name} (weights {mine}) does not fit: the source {where} "
        "(use the source's --architecture, --depth, --base_filters; see its flags.txt)"
      )
  extra = sorted(set(theirs) - set(ours))
  if extra:
    raise model_files.ModelFileError(
      f"{path}: the source has layers this run lacks: "
      f"{', '.join(extra[:3])} (use the source's flags.txt)"
    )
  for name, layer in ours.items():
    layer.set_weights(theirs[name].get_weights())
  logging.info("initialized %d layers from %s", len(ours), path)


def freeze_encoder(model):
  """Makes the encoder (contracting path and bottleneck) untrainable; returns the layer
  count. Frozen batch-norm layers also keep their statistics (Keras runs them in inference
  mode), so the source's features stay as they were learnt."""
  frozen = [layer for layer in model.layers if layer.name.startswith(blocks.ENCODER_PREFIXES)]
  for layer in frozen:
    layer.trainable = False
  logging.info("froze %d encoder layers", len(frozen))
  return len(frozen)
