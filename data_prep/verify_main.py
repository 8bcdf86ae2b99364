r"""Verifies converted drops: every record, CRCs included, against the manifest.

  python -m data_prep.verify_main --data_dir=tfrecords [--drops=a,b]

Exit status 1 on any fault, each printed as `<file>: <reason>`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Dataset folder holding the drops.")
_DROPS = flags.DEFINE_list("drops", None, "Only these drops (default: every complete drop).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from data_prep import verify  # imports TensorFlow; after flag parsing so --help stays fast

  report = verify.verify(_DATA_DIR.value, _DROPS.value)
  for warning in report.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  for fault in report.faults:
    print(f"fault: {fault}", file=sys.stderr)
  status = "FAILED" if report.faults else "OK"
  print(
    f"verify {status}: {report.drops} drops, {report.shards} shards, {report.examples} "
    f"examples, {len(report.faults)} faults"
  )
  if report.faults:
    sys.exit(1)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
