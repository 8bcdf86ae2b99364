"""U-Net family, losses and metrics. `model.config` holds the architectures' settings without
TensorFlow; import `model.serializable` before loading a saved model with
`keras.models.load_model`."""
