"""Bytes to tensors, batched: parse a batch of serialized slices, decode pixels, derive targets.

Decoding (schema -> tensors) is kept apart from augmentation and from the training pair,
so each step can be tested alone (STYLE.md: Model Garden's decoder/parser split).
"""

import tensorflow as tf

from data_prep import tfrecord_schema
from data_prep.labels import REGION_NAMES
from data_prep.labels import TASKS


def num_targets(task: str) -> int:
  return len(REGION_NAMES[task])


PIXEL_FEATURES = {name: tfrecord_schema.FEATURES[name] for name in ("image", "label")}


def decode_batch(
  serialized: tf.Tensor,
  *,
  image_size: int,
  channels: int,
  image_dtype: str,
  with_metadata: bool = True,
) -> dict[str, tf.Tensor]:
  """A batch of serialized examples -> dict with image [B,H,W,C] in the stored dtype (the
  cast to float32 is left to the compiled step that follows), label uint8 [B,H,W] and,
  with metadata, patient_id, slice_index and has_tumor (training skips parsing them)."""
  spec = tfrecord_schema.FEATURES if with_metadata else PIXEL_FEATURES
  features = tf.io.parse_example(serialized, spec)
  image = tf.io.decode_raw(features["image"], tf.as_dtype(image_dtype), little_endian=True)
  image = tf.reshape(image, [-1, image_size, image_size, channels])
  label = tf.io.decode_raw(features["label"], tf.uint8)
  label = tf.reshape(label, [-1, image_size, image_size])
  decoded = {"image": image, "label": label}
  if with_metadata:
    decoded.update(
      patient_id=features["patient_id"],
      slice_index=features["slice_index"],
      has_tumor=features["has_tumor"],
    )
  return decoded


def targets_from_labels(label: tf.Tensor, task: str) -> tf.Tensor:
  """Unified label map [..., H, W] -> float32 targets [..., H, W, K] (BraTS region convention).

  whole_tumor: label > 0. regions: WT = {1,2,3}, TC = {1,3}, ET = {3}.
  """
  label = label[..., None]
  if task == "whole_tumor":
    # = label > 0. On float32, not uint8: Eigen vectorizes the float minimum but runs the
    # uint8 one (and comparisons, whose bool output has no vector type) element by element.
    return tf.minimum(tf.cast(label, tf.float32), 1.0)
  if task == "regions":
    regions = [label > 0, (label == 1) | (label == 3), label == 3]
    return tf.cast(tf.concat(regions, axis=-1), tf.float32)
  raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
