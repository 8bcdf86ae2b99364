"""Writes serialized examples into per-fold TFRecord shards sized by bytes.

The total number of shards of a fold is known only at the end, so shards are written
under provisional names and renamed to `fold-<k>-<i:05d>-of-<n:05d>.tfrecord` by
`close()`; all of this happens inside the drop's staging folder.

Records come either as bytes (`write`) or already framed in a file a worker process
wrote (`write_framed`): then the writing process only copies byte ranges, in the kernel
where it can, instead of receiving every example through a pipe.
"""

import collections
import os

from data_prep import tfrecord_framing
from data_prep.shard_plan import RECORD_OVERHEAD_BYTES


def shard_name(fold, index, count):
  return f"fold-{fold}-{index:05d}-of-{count:05d}.tfrecord"


class _OpenShard:
  def __init__(self, path, fold):
    self.path = path
    self.fold = fold
    self.file = open(path, "wb", buffering=0)  # unbuffered: framed ranges are copied by fd
    self.examples = 0
    self.bytes = 0
    self.patients = collections.Counter()

  def write(self, patient_id, record):
    framed = tfrecord_framing.frame(record)
    _write_all(self.file, framed)
    self._count(patient_id, len(framed))

  def copy_framed(self, patient_id, source_fd, offset, length):
    _copy_range(source_fd, self.file.fileno(), offset, length)
    self._count(patient_id, length)

  def _count(self, patient_id, framed_bytes):
    self.examples += 1
    self.bytes += framed_bytes
    self.patients[patient_id] += 1


class FoldShardWriter:
  """Appends examples to the current shard of their fold; starts a new one past `shard_bytes`."""

  def __init__(self, directory, shard_bytes):
    self.directory = directory
    self.shard_bytes = shard_bytes
    self._open = {}  # fold -> _OpenShard
    self._closed = collections.defaultdict(list)  # fold -> [_OpenShard]

  def write(self, fold, patient_id, record):
    self._shard(fold).write(patient_id, record)

  def write_framed(self, fold, patient_id, path, record_sizes):
    """Appends the records framed back to back in `path`, of these unframed sizes, in order."""
    with open(path, "rb") as source:
      offset = 0
      for size in record_sizes:
        length = size + RECORD_OVERHEAD_BYTES
        self._shard(fold).copy_framed(patient_id, source.fileno(), offset, length)
        offset += length
    if offset != os.path.getsize(path):
      raise IOError(f"{path}: holds {os.path.getsize(path)} bytes, the records {offset}")

  def _shard(self, fold):
    """The open shard of `fold`, a new one when the current is full."""
    shard = self._open.get(fold)
    if shard is not None and shard.bytes >= self.shard_bytes:
      self._finish(fold)
      shard = None
    if shard is None:
      index = len(self._closed[fold])
      shard = _OpenShard(os.path.join(self.directory, f".fold-{fold}-{index:05d}.partial"), fold)
      self._open[fold] = shard
    return shard

  def _finish(self, fold):
    shard = self._open.pop(fold)
    shard.file.close()
    self._closed[fold].append(shard)

  def close(self):
    """Closes every shard, gives it its final name; returns the manifest's shard list."""
    for fold in list(self._open):
      self._finish(fold)
    entries = []
    for fold in sorted(self._closed):
      shards = self._closed[fold]
      for index, shard in enumerate(shards):
        name = shard_name(fold, index, len(shards))
        os.replace(shard.path, os.path.join(self.directory, name))
        size = os.path.getsize(os.path.join(self.directory, name))
        if size != shard.bytes:
          raise IOError(f"{name}: wrote {size} bytes, expected {shard.bytes}")
        entries.append(
          {
            "file": name,
            "fold": fold,
            "examples": shard.examples,
            "bytes": size,
            "patients": dict(sorted(shard.patients.items())),
          }
        )
    return entries


def _write_all(file, data):
  view = memoryview(data)
  while view:
    view = view[file.write(view) :]


def _copy_range(source_fd, target_fd, offset, length):
  """Copies bytes [offset, offset + length) of one file to the end of another."""
  end = offset + length
  while offset < end:
    try:
      copied = os.copy_file_range(source_fd, target_fd, end - offset, offset)
    except (AttributeError, OSError):  # not Linux, or a file system without it
      copied = os.write(target_fd, os.pread(source_fd, min(end - offset, 1 << 20), offset))
    if copied == 0:
      raise IOError(f"file ended at byte {offset} of a record ending at {end}")
    offset += copied
