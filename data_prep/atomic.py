"""Atomic file writes: a reader sees the old file or the new one, never half of one.

On object storage every object write already is: the object appears when its writer closes.
"""

import json
import os
import tempfile

from data_prep import storage


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_bytes(path, data):
  """Writes `data` to a temporary file beside `path`, fsyncs, then renames over `path`."""
  if storage.is_remote(path):
    storage.write_bytes(path, data)
    return
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(
    dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
  )
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp_path, 0o666 & ~_umask())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.unlink(tmp_path)
    raise


def dumps(value, indent=0):
  """JSON with one key per line, but lists of numbers or strings kept on one line."""
  pad = " " * (indent + 1)
  if isinstance(value, dict) and value:
    items = [f"{pad}{json.dumps(str(k))}: {dumps(v, indent + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
  if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
    items = [pad + dumps(v, indent + 1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
  return json.dumps(value)


def write_json(path, value):
  write_bytes(path, (dumps(value) + "\n").encode("utf-8"))
