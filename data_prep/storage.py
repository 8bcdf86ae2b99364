"""Paths on a local disk or on object storage (`gs://`, `s3://`, ...).

Local paths use `os`. Any other scheme goes through Apache Beam's `FileSystems` (the
`.[beam]` extra; `gs://` also needs `apache-beam[gcp]`), so a conversion on Dataflow reads
the source bucket and writes the drop into a bucket directly. Object stores have no folders,
no rename and no locks: a "folder" is a name prefix, an object appears whole when its writer
closes, and `drops.RemoteStaging` publishes a drop by copying it with its manifest last.
"""

import os
import shutil


GLOB_CHARACTERS = "*?[]"  # Beam's match reads them as patterns and cannot quote them


def is_remote(path: str) -> bool:
  return "://" in path


def join(base: str, *names: str) -> str:
  if not is_remote(base):
    return os.path.join(base, *names)
  return "/".join([base.rstrip("/"), *names])


def absolute(path: str) -> str:
  return path if is_remote(path) else os.path.abspath(path)


def basename(path: str) -> str:
  return path.rstrip("/").rsplit("/", 1)[-1]


def _filesystems():
  from apache_beam.io.filesystems import FileSystems  # only for remote paths

  return FileSystems


def _uncompressed():
  from apache_beam.io.filesystem import CompressionTypes

  return CompressionTypes.UNCOMPRESSED  # a .nii.gz is read as bytes, not gunzipped


def match(pattern: str) -> list:
  """Paths of the objects matching `pattern` (`*` stays within a name, `**` crosses `/`)."""
  result = _filesystems().match([pattern])[0]
  return sorted(metadata.path for metadata in result.metadata_list)


def list_objects(prefix: str) -> list:
  """Every object under the remote `prefix`, sorted."""
  return match(join(prefix, "**"))


def isdir(path: str) -> bool:
  """A local folder, or a remote prefix holding at least one object."""
  if not is_remote(path):
    return os.path.isdir(path)
  return bool(list_objects(path))


def exists(path: str) -> bool:
  return _filesystems().exists(path) if is_remote(path) else os.path.exists(path)


def walk_files(root: str):
  """Every file under `root`, sorted, skipping names (and local folders) starting with '.'."""
  if is_remote(root):
    prefix = root.rstrip("/") + "/"
    for path in list_objects(root):
      if not any(part.startswith(".") for part in path[len(prefix) :].split("/")):
        yield path
    return
  for directory, subdirs, names in os.walk(root, followlinks=True):  # symlinked cases count
    subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
    for name in sorted(names):
      if not name.startswith("."):
        yield os.path.join(directory, name)


def read_bytes(path: str) -> bytes:
  """The file's bytes; raises OSError (remote failures included) when it cannot be read."""
  if not is_remote(path):
    with open(path, "rb") as f:
      return f.read()
  try:
    with _filesystems().open(path, compression_type=_uncompressed()) as f:
      return f.read()
  except Exception as error:  # Beam raises its own kinds; callers expect OSError
    raise OSError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None


def write_bytes(path: str, data: bytes) -> None:
  """Writes a remote object in one piece (it appears only when complete)."""
  with _filesystems().create(path, compression_type=_uncompressed()) as f:
    f.write(data)


def upload(local_path: str, remote_path: str) -> None:
  with open(local_path, "rb") as source:
    with _filesystems().create(remote_path, compression_type=_uncompressed()) as target:
      shutil.copyfileobj(source, target, length=8 << 20)


def copy(source: str, destination: str) -> None:
  """Copies one remote object (server-side on GCS)."""
  _filesystems().copy([source], [destination])


def delete(paths: list) -> None:
  """Deletes files or remote objects."""
  remote = [path for path in paths if is_remote(path)]
  if remote:
    _filesystems().delete(remote)
  for path in paths:
    if not is_remote(path):
      os.unlink(path)


def delete_all(objects: list, last: str | None = None) -> None:
  """Deletes `objects`; those named `last` go last (a marker that must outlive the rest, so
  a deletion cut short is still recognisable)."""
  delete([path for path in objects if basename(path) != last])
  delete([path for path in objects if basename(path) == last])
