"""Writes TFRecord files without importing TensorFlow.

Importing TensorFlow costs the converter's writing process about 8 s of one core before the
first shard (and a Beam worker as much, plus TensorFlow installed on every worker), which
is most of the serial part of a conversion. The TFRecord framing is small and stable:
each record is its length (uint64, little-endian), the masked CRC-32C of those 8 bytes,
the record, and the masked CRC-32C of the record. `google-crc32c` computes the CRC in C.
A test checks the bytes against `tf.io.TFRecordWriter`.
"""

import struct

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data):
  """TFRecord's CRC: rotated right by 15 bits plus a constant (TensorFlow's crc32c.h)."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record):
  """The bytes of one record as a TFRecord file holds it."""
  length = struct.pack("<Q", len(record))
  return b"".join(
    (
      length,
      struct.pack("<I", masked_crc32c(length)),
      record,
      struct.pack("<I", masked_crc32c(record)),
    )
  )


class TFRecordFile:
  """Appends framed records to a local file; a context manager like `tf.io.TFRecordWriter`."""

  def __init__(self, path):
    self._file = open(path, "wb")

  def write(self, record):
    self._file.write(frame(record))

  def close(self):
    self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
