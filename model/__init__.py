"""U-Net, losses and metrics. Importing this package registers the custom losses and
metrics with Keras, so saved models load with plain `keras.models.load_model`."""

from model import losses  # noqa: F401  (registers serializable losses)
from model import metrics  # noqa: F401  (registers serializable metrics)
