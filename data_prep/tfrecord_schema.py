"""The TFRecord feature spec (DESIGN.md), shared by verification and the tf.data reader."""

import tensorflow as tf

FEATURES = {
  "image": tf.io.FixedLenFeature([], tf.string),
  "label": tf.io.FixedLenFeature([], tf.string),
  "height": tf.io.FixedLenFeature([], tf.int64),
  "width": tf.io.FixedLenFeature([], tf.int64),
  "channels": tf.io.FixedLenFeature([], tf.int64),
  "patient_id": tf.io.FixedLenFeature([], tf.string),
  "slice_index": tf.io.FixedLenFeature([], tf.int64),
  "fold": tf.io.FixedLenFeature([], tf.int64),
  "has_tumor": tf.io.FixedLenFeature([], tf.int64),
}

NUM_LABELS = 4  # unified map: 0 background, 1 core, 2 edema, 3 enhancing


def parse_batch(serialized):
  """Parses a batch of serialized examples into a dict of tensors (pixels still bytes)."""
  return tf.io.parse_example(serialized, FEATURES)
