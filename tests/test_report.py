"""report.html: complete, linked only inside its folder, and sortable in a real browser."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from data_prep import overlays
from evaluation import report

ROWS = [
  {
    "patient_id": pid,
    "region": "whole_tumor",
    "dice": dice,
    "hd95_mm": hd95,
    "sensitivity": 0.9,
    "precision": 0.8,
    "gt_voxels": 1000,
    "pred_voxels": 900,
  }
  for pid, dice, hd95 in (("P_mid", 0.85, 4.0), ("P_low", 0.40, 30.0), ("P_high", 0.95, 2.0))
]
METRICS = {
  "task": "whole_tumor",
  "num_patients": 3,
  "num_slices": 30,
  "threshold": 0.5,
  "grid": "source",
  "inference": {"members": 1, "tta": True},
  "regions": {
    "whole_tumor": {
      "dice_mean": 0.7333,
      "dice_median": 0.85,
      "hd95_mean_mm": 12.0,
      "sensitivity_mean": 0.9,
      "precision_mean": 0.8,
    }
  },
}


@pytest.fixture
def folder(tmp_path):
  run_dir, out = tmp_path / "run", tmp_path / "run" / "eval"
  (out / "overlays").mkdir(parents=True)
  (out / "gifs").mkdir()
  picture = np.zeros((8, 8, 3), np.uint8)
  overlays.save_png(str(out / "overlays" / "worst_P_low_slice010.png"), picture)
  overlays.save_png(str(out / "overlays" / "worst_P_old_slice001.png"), picture)  # earlier eval
  overlays.save_png(str(run_dir / report.CURVES), picture)
  (out / "gifs" / "P_low.gif").write_bytes(b"GIF89a")
  curves = report.copy_curves(str(out), [str(run_dir)])
  report.write_report(
    str(out),
    METRICS,
    ROWS,
    overlays=["overlays/worst_P_low_slice010.png"],
    gifs=["gifs/P_low.gif"],
    curves=curves,
  )
  return out


def test_report_holds_the_tables_and_links_only_inside_its_folder(folder):
  page = (folder / report.REPORT).read_text()
  for text in ("P_low", "P_mid", "P_high", "0.733", "0.400", "TTA on"):
    assert text in page
  assert page.index("P_low") < page.index("P_mid") < page.index("P_high")  # worst first
  links = re.findall(r"src='([^']+)'", page)
  assert sorted(links) == [
    "gifs/P_low.gif",
    "overlays/worst_P_low_slice010.png",
    "training_curves.png",
  ]
  for link in links:  # relative and present: the folder can be zipped and still open
    assert not os.path.isabs(link) and ".." not in link and (folder / link).is_file()


def _browser():
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(name):
      return shutil.which(name)
  return None


def test_report_sorts_in_a_real_browser(folder):
  browser = _browser()
  if browser is None:
    pytest.skip("no Chromium installed (apt-get install chromium) to open the report in")
  url = (folder / report.REPORT).as_uri() + "#sort=2"  # column 2: Dice, ascending
  result = subprocess.run(
    [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  body = result.stdout[result.stdout.index('id="patients"') :]
  order = re.findall(r"<td class=\"id\">(P_\w+)</td>", body)
  assert order == ["P_low", "P_mid", "P_high"]
  sorted_desc = subprocess.run(
    [
      browser,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--dump-dom",
      (folder / report.REPORT).as_uri() + "#sort=3",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  ).stdout  # column 3: HD95, ascending: best (2 mm) first
  body = sorted_desc[sorted_desc.index('id="patients"') :]
  assert re.findall(r"<td class=\"id\">(P_\w+)</td>", body) == ["P_high", "P_mid", "P_low"]
