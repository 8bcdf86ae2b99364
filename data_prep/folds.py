"""Patient folds from a stable hash, so a patient lands in the same fold in every drop."""

import hashlib

FOLD_HASH = "sha256(patient_id utf-8), first 8 bytes big-endian, modulo num_folds"


def fold_of(patient_id, num_folds):
  """The fold of a patient: the same on every machine, Python version and drop."""
  digest = hashlib.sha256(patient_id.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % num_folds
