"""U-Net family, losses and metrics. Importing this package registers the custom losses,
metrics and layers with Keras, so saved models load with plain `keras.models.load_model`."""

from model import losses  # noqa: F401  (registers serializable losses)
from model import metrics  # noqa: F401  (registers serializable metrics)
from model import trans_unet  # noqa: F401  (registers PositionEmbedding)
