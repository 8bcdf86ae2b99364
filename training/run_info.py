"""What a run ran on, written beside its outputs so a result can be traced a year later:
run_info.json (versions, git commit, devices, CPU, command line, start time) and run.log
(the run's absl log, also still printed on the console)."""

import contextlib
import datetime
import json
import logging as std_logging
import os
import platform
import subprocess
import sys

from absl import logging

from data_prep import atomic
from data_prep import machine

RUN_INFO = "run_info.json"
LOG_FILE = "run.log"  # not train.log: cross_validate_main.py writes that from stdout
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args):
  result = subprocess.run(
    ["git", "-C", _REPO_DIR, *args], capture_output=True, text=True, timeout=30
  )
  return result.stdout.strip() if result.returncode == 0 else None


def git_state():
  """{"commit", "dirty"} of the checkout this code runs from; commit None when the code is
  not a git checkout of its own (an installed package) or git is missing. Dirty means
  tracked files differ from the commit."""
  try:
    top = _git("rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top) != os.path.realpath(_REPO_DIR):
      return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}
  except (OSError, subprocess.SubprocessError):
    return {"commit": None, "dirty": None}


def collect():
  """The record of this process: versions, code, hardware, command line, start time."""
  import keras
  import numpy as np
  import tensorflow as tf

  return {
    "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "command": list(sys.argv),
    "python": platform.python_version(),
    "tensorflow": tf.__version__,
    "keras": keras.__version__,
    "numpy": np.__version__,
    "git": git_state(),
    "devices": [{"name": d.name, "type": d.device_type} for d in tf.config.list_logical_devices()],
    "cpu": machine.cpu_model(),
    "host": platform.node(),
    "platform": platform.platform(),
  }


def write(model_dir):
  """Writes `<model_dir>/run_info.json`; returns the record. The records of earlier starts in
  the same folder (a resumed run) are kept in its "earlier_starts"."""
  path = os.path.join(model_dir, RUN_INFO)
  info = collect()
  try:
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    info["earlier_starts"] = previous.pop("earlier_starts", []) + [previous]
  except (OSError, ValueError, AttributeError, TypeError):
    pass  # first start, or an unreadable record that is not worth keeping
  atomic.write_json(path, info)
  return info


@contextlib.contextmanager
def log_to_file(model_dir):
  """Copies absl's log lines into `<model_dir>/run.log` (appended: a resumed run adds to it)
  while the block runs; the console keeps them too."""
  handler = std_logging.FileHandler(os.path.join(model_dir, LOG_FILE), encoding="utf-8")
  handler.setFormatter(logging.PythonFormatter())
  logger = logging.get_absl_logger()
  logger.addHandler(handler)
  try:
    yield handler
  finally:
    logger.removeHandler(handler)
    handler.close()
