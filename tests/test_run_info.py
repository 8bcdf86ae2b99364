"""Run records: run_info.json (versions, git commit, devices, CPU, command line, start) and
run.log (the absl log) written into the run folder."""

import datetime
import json
import os
import platform
import re
import subprocess

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from conftest import REPO_ROOT
from training import run_info


def _is_checkout(folder):
  result = subprocess.run(
    ["git", "-C", folder, "rev-parse", "--show-toplevel"], capture_output=True, text=True
  )
  return result.returncode == 0 and os.path.samefile(result.stdout.strip(), folder)


def test_run_info_records_versions_code_devices_and_command(tiny_run):
  run_dir, started, _ = tiny_run
  info = json.loads((run_dir / run_info.RUN_INFO).read_text())
  assert {
    "started_utc",
    "command",
    "python",
    "tensorflow",
    "keras",
    "numpy",
    "git",
    "devices",
    "cpu",
  } <= set(info)
  assert info["tensorflow"] == tf.__version__ and info["keras"] == keras.__version__
  assert info["numpy"] == np.__version__ and info["python"] == platform.python_version()
  assert info["command"][0].endswith("train_main.py")
  assert f"--model_dir={run_dir}" in info["command"] and "--steps_per_epoch=6" in info["command"]
  start = datetime.datetime.fromisoformat(info["started_utc"])
  assert start.tzinfo is not None and started <= start <= started + datetime.timedelta(minutes=5)
  assert any(d["type"] == "CPU" and "CPU" in d["name"] for d in info["devices"])
  assert info["cpu"] and "earlier_starts" not in info
  if _is_checkout(REPO_ROOT):
    assert re.fullmatch(r"[0-9a-f]{40}", info["git"]["commit"])
    assert isinstance(info["git"]["dirty"], bool)
  else:
    assert info["git"] == {"commit": None, "dirty": None}


def test_the_absl_log_goes_to_run_log_and_the_console(tiny_run):
  run_dir, _, result = tiny_run
  log = (run_dir / run_info.LOG_FILE).read_text()
  assert "training on folds" in log and "training on folds" in result.stderr
  assert re.search(r"^I\d{4} [\d:.]+ +\d+ trainer\.py:\d+\] training on folds", log, re.M)


def test_a_second_start_keeps_the_first_record(tmp_path):
  first = run_info.write(str(tmp_path))
  second = run_info.write(str(tmp_path))
  stored = json.loads((tmp_path / run_info.RUN_INFO).read_text())
  assert stored == json.loads(json.dumps(second))
  assert stored["earlier_starts"] == [json.loads(json.dumps(first))]


def test_log_to_file_appends_and_detaches(tmp_path):
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)  # as under app.run; pytest leaves absl at WARNING
  try:
    for text in ("first start", "second start"):
      with run_info.log_to_file(str(tmp_path)):
        logging.info(text)
    logging.info("after the run")
  finally:
    logging.set_verbosity(verbosity)
  log = (tmp_path / run_info.LOG_FILE).read_text()
  assert "first start" in log and "second start" in log and "after the run" not in log


def test_no_commit_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
  monkeypatch.setattr(run_info, "_REPO_DIR", str(tmp_path))  # not a git checkout
  assert run_info.git_state() == {"commit": None, "dirty": None}
  monkeypatch.setattr(run_info, "_REPO_DIR", REPO_ROOT)
  monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH
  assert run_info.git_state() == {"commit": None, "dirty": None}
