"""Encodes one slice as a serialized `tf.train.Example` without importing TensorFlow.

Converter workers (a process pool here, Beam workers at scale) only need to produce
bytes. Importing TensorFlow costs each worker seconds and hundreds of MiB, so the
protobuf wire format of `Example` (stable since 2015) is written directly. A test
checks the bytes against `tf.train.Example` parsing, and the reader uses TensorFlow's
own `parse_example`.

Schema (DESIGN.md): image bytes [H, W, C] little-endian in the manifest dtype, label
bytes uint8 [H, W], height/width/channels, patient_id, slice_index, fold, has_tumor.
"""

import numpy as np

_LENGTH_DELIMITED = 2


def _varint(value):
  """Protobuf base-128 varint of a non-negative int."""
  if value < 0:
    raise ValueError(f"negative int64 features are not used in this schema: {value}")
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number, payload):
  """A length-delimited field: tag, length, payload."""
  return _varint((number << 3) | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _bytes_feature(value):
  # Feature.bytes_list (1) -> BytesList.value (1)
  return _field(1, _field(1, value))


def _int64_feature(value):
  # Feature.int64_list (3) -> Int64List.value (1), packed
  return _field(3, _field(1, _varint(int(value))))


def encode_features(features):
  """Serializes {name: bytes | int} as an `Example` (Example.features(1).feature(1) map)."""
  entries = []
  for name in sorted(features):
    value = features[name]
    feature = _bytes_feature(value) if isinstance(value, bytes) else _int64_feature(value)
    entries.append(_field(1, _field(1, name.encode("utf-8")) + _field(2, feature)))
  return _field(1, b"".join(entries))


def encode_slice(image, label, *, patient_id, slice_index, fold, image_dtype):
  """One axial slice as serialized Example bytes.

  Args:
    image: float [H, W, C], cast to `image_dtype` little-endian.
    label: uint8 [H, W] unified label map.
  """
  height, width, channels = image.shape
  if label.shape != (height, width):
    raise ValueError(f"label shape {label.shape} does not match image {image.shape}")
  pixels = np.ascontiguousarray(image, dtype=np.dtype(image_dtype).newbyteorder("<"))
  return encode_features(
    {
      "image": pixels.tobytes(),
      "label": np.ascontiguousarray(label, dtype=np.uint8).tobytes(),
      "height": height,
      "width": width,
      "channels": channels,
      "patient_id": patient_id.encode("utf-8"),
      "slice_index": int(slice_index),
      "fold": int(fold),
      "has_tumor": int(np.any(label > 0)),
    }
  )
