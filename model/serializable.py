"""Importing this module registers the project's custom losses, metrics and layers with Keras,
so saved models load with plain `keras.models.load_model`."""

from model import losses  # noqa: F401
from model import metrics  # noqa: F401
from model import trans_unet  # noqa: F401  (PositionEmbedding)
