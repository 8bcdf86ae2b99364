"""The dataset folder: which drops are complete, and the staging folders new drops grow in.

A drop is complete when it is a folder with a `manifest.json` and none of the
staging suffixes. It is built under `<drop>.incomplete/` and renamed at the end, so a
killed run leaves nothing a reader takes. Only folders carrying our marker file are
ever deleted, so a user's own folder is never removed. On object storage (`RemoteStaging`)
there is no rename: the drop is copied into place with its manifest last.
"""

import fcntl
import json
import os
import shutil

from data_prep import storage

MANIFEST = "manifest.json"
ERRORS = "errors.json"
INCOMPLETE_SUFFIX = ".incomplete"
RETIRED_SUFFIX = ".retired"
MARKER = ".brats-unet-staging"
_LOCK = ".lock"
_STAGING_SUFFIXES = (INCOMPLETE_SUFFIX, RETIRED_SUFFIX)


class DropError(Exception):
  """A dataset-folder problem that stops the run (printed in one line)."""


def is_staging_name(name):
  return name.endswith(_STAGING_SUFFIXES)


def list_complete_drops(data_dir):
  """Sorted [(name, path)] of complete drops directly under `data_dir`."""
  if storage.is_remote(data_dir):
    manifests = storage.match(storage.join(data_dir, "*", MANIFEST))
    names = sorted(path.rsplit("/", 2)[-2] for path in manifests)
    return [
      (name, storage.join(data_dir, name))
      for name in names
      if not name.startswith(".") and not is_staging_name(name)
    ]
  if not os.path.isdir(data_dir):
    return []
  drops = []
  for name in sorted(os.listdir(data_dir)):
    path = os.path.join(data_dir, name)
    if (
      not name.startswith(".")
      and not is_staging_name(name)
      and os.path.isfile(os.path.join(path, MANIFEST))
    ):
      drops.append((name, path))
  return drops


def load_manifest(drop_path):
  return json.loads(storage.read_bytes(storage.join(drop_path, MANIFEST)).decode("utf-8"))


def patients_in_drops(data_dir):
  """{patient_id: drop name} over every complete drop."""
  owners = {}
  for name, path in list_complete_drops(data_dir):
    for patient_id in load_manifest(path)["patients"]:
      owners.setdefault(patient_id, name)
  return owners


def _is_ours(path):
  return os.path.isfile(os.path.join(path, MARKER))


def remove_ours(path):
  """Deletes a staging or retired folder this project made; refuses anything else."""
  if not os.path.exists(path):
    return
  if not _is_ours(path):
    raise DropError(f"{path}: exists but was not made by brats-unet; move it away")
  shutil.rmtree(path)


class StagingFolder:
  """`<output_dir>/<name>.incomplete`, locked while a run writes into it.

  A stale folder from a killed run (its lock is free again, since the kernel drops
  flock locks with the process) is cleared and rebuilt; one that another live run holds
  is an error.
  """

  def __init__(self, output_dir, name):
    self.path = os.path.join(output_dir, name + INCOMPLETE_SUFFIX)
    self._lock_file = None

  def __enter__(self):
    if os.path.exists(self.path):
      self._lock(existing=True)
      self.release()
      remove_ours(self.path)
    os.makedirs(self.path)
    with open(os.path.join(self.path, MARKER), "w", encoding="utf-8") as f:
      f.write("staging folder of a brats-unet conversion; safe to delete when no run is going\n")
    self._lock(existing=False)
    return self

  def _lock(self, existing):
    lock_path = os.path.join(self.path, _LOCK)
    if existing and not _is_ours(self.path):
      raise DropError(f"{self.path}: exists but was not made by brats-unet; move it away")
    self._lock_file = open(lock_path, "a+", encoding="utf-8")
    try:
      fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._lock_file.close()
      self._lock_file = None
      raise DropError(f"{self.path}: another conversion is writing this drop") from None

  def release(self):
    if self._lock_file is not None:
      self._lock_file.close()
      self._lock_file = None

  def publish(self, final_path):
    """Renames the finished folder to `final_path` in one step (atomic on POSIX)."""
    self.release()
    os.rename(self.path, final_path)
    for name in (MARKER, _LOCK):
      os.unlink(os.path.join(final_path, name))

  def __exit__(self, exc_type, exc, tb):
    self.release()
    if exc_type is not None and os.path.exists(self.path) and _is_ours(self.path):
      shutil.rmtree(self.path, ignore_errors=True)
    return False


class RemoteStaging:
  """`<output_dir>/<name>.incomplete/` on object storage, where a drop cannot be renamed.

  `publish` copies every staged object into `<output_dir>/<final>/` (server-side on GCS),
  the manifest last: readers take a drop only once its manifest exists, so a publish cut
  short leaves nothing they take, and the next run clears it (it carries our marker and no
  manifest). Object stores have no locks: two runs writing one drop name at the same time
  are the user's to avoid.
  """

  def __init__(self, output_dir, name):
    self.path = storage.join(output_dir, name + INCOMPLETE_SUFFIX)

  def __enter__(self):
    clear_unfinished(self.path)
    storage.write_bytes(storage.join(self.path, MARKER), b"staging prefix of brats-unet\n")
    return self

  def publish(self, final_path):
    clear_unfinished(final_path)
    storage.write_bytes(storage.join(final_path, MARKER), b"brats-unet drop being published\n")
    manifest = storage.join(self.path, MANIFEST)
    staged = storage.list_objects(self.path)
    copies = [path for path in staged if path != manifest and storage.basename(path) != MARKER]
    for path in copies + [manifest]:  # the manifest last: from here on the drop is visible
      storage.copy(path, final_path.rstrip("/") + path[len(self.path.rstrip("/")) :])
    storage.delete_all(staged, last=MARKER)
    storage.delete([storage.join(final_path, MARKER)])  # `recover` finishes a cut-short tidy

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      clear_unfinished(self.path)
    return False


def unfinished(prefix, objects):
  """True when `objects`, listed under the remote `prefix`, are a staging or a cut-short
  publish of ours."""
  names = {path[len(prefix.rstrip("/")) + 1 :] for path in objects}
  staging = prefix.rstrip("/").endswith(INCOMPLETE_SUFFIX)
  return MARKER in names and (staging or MANIFEST not in names)


def clear_unfinished(prefix):
  """Deletes our unfinished objects under the remote `prefix`; refuses anyone else's."""
  objects = storage.list_objects(prefix)
  if not objects:
    return
  if not unfinished(prefix, objects):
    raise DropError(f"{prefix}: exists but was not made by brats-unet; move it away")
  storage.delete_all(objects, last=MARKER)


def staging_folder(output_dir, name):
  """Where a new drop named `name` grows: a locked local folder, or a remote prefix."""
  if storage.is_remote(output_dir):
    return RemoteStaging(output_dir, name)
  return StagingFolder(output_dir, name)


def mark_ours(path):
  """Marks a folder (a drop about to be retired) as safe for `remove_ours`."""
  with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
    f.write("retired brats-unet drop\n")


def recover(output_dir):
  """Restores `<name>.retired` when `<name>` is missing; deletes it when `<name>` exists.
  On object storage (no retired drops: --overwrite is refused there) it finishes the tidying
  of a publish cut short after its manifest: the staging copy and the marker go."""
  if storage.is_remote(output_dir):
    for name, path in list_complete_drops(output_dir):
      staging = storage.join(output_dir, name + INCOMPLETE_SUFFIX)
      objects = storage.list_objects(staging)
      if objects and unfinished(staging, objects):
        storage.delete_all(objects, last=MARKER)
      if storage.exists(storage.join(path, MARKER)):
        storage.delete([storage.join(path, MARKER)])
    return
  if not os.path.isdir(output_dir):
    return
  for entry in sorted(os.listdir(output_dir)):
    if not entry.endswith(RETIRED_SUFFIX):
      continue
    retired = os.path.join(output_dir, entry)
    original = os.path.join(output_dir, entry[: -len(RETIRED_SUFFIX)])
    if os.path.exists(original):
      remove_ours(retired)
    else:
      os.rename(retired, original)
      os.unlink(os.path.join(original, MARKER))
