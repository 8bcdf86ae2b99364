"""report.html: an evaluation a person opens in a browser, beside metrics.json.

One self-contained page (inline CSS and a few lines of script to sort the patient table)
that links only to files inside the evaluation folder (overlays/, gifs/ and copies of the
training curves), so the folder can be zipped and mailed and still open.
"""

from collections.abc import Sequence
import html
import os
import shutil
from typing import Any

from data_prep import atomic

REPORT = "report.html"
CURVES = "training_curves.png"  # written by the trainer into each run folder

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
th.sortable { cursor: pointer; }
td.id, th.id { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
"""

# Clicking a header sorts the patient table by that column (numbers as numbers); clicking
# again reverses the order.
_SORT_SCRIPT = r"""
function sortTable(column) {
  const table = document.getElementById("patients");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const ascending = table.dataset.column == column ? table.dataset.order != "asc" : true;
  const value = row => {
    const text = row.cells[column].textContent;
    const number = parseFloat(text);
    return isNaN(number) ? text : number;
  };
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(row => body.appendChild(row));
  table.dataset.column = column;
  table.dataset.order = ascending ? "asc" : "desc";
}
// report.html#sort=N opens the table sorted by column N (a link to a sorted view).
window.addEventListener("DOMContentLoaded", () => {
  const match = location.hash.match(/^#sort=(\d+)$/);
  if (match) sortTable(parseInt(match[1]));
});
"""

_SUMMARY_COLUMNS = (
  ("Dice mean", "dice_mean", 3),
  ("median", "dice_median", 3),
  ("worst", "dice_worst", 3),
  ("HD95 mean (mm)", "hd95_mean_mm", 1),
  ("sensitivity", "sensitivity_mean", 3),
  ("precision", "precision_mean", 3),
)
_PATIENT_COLUMNS = (
  ("Dice", "dice", 3),
  ("HD95 (mm)", "hd95_mm", 1),
  ("sensitivity", "sensitivity", 3),
  ("precision", "precision", 3),
  ("truth voxels", "gt_voxels", 0),
  ("predicted voxels", "pred_voxels", 0),
)


def _number(value, digits):
  if value is None:
    return ""
  return f"{value:.{digits}f}" if digits else f"{int(value):d}"


def copy_curves(output_dir: str, run_dirs: Sequence[str]) -> list[str]:
  """Copies each run's training curves into the report folder; returns their file names."""
  names = []
  for i, run_dir in enumerate(run_dirs):
    source = os.path.join(run_dir, CURVES)
    if not os.path.isfile(source):
      continue
    name = CURVES if len(run_dirs) == 1 else f"training_curves_{i}.png"
    tmp = os.path.join(output_dir, f".{name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, os.path.join(output_dir, name))
    names.append(name)
  return names


def _summary_table(metrics, rows):
  head = "".join(f"<th>{html.escape(title)}</th>" for title, _, _ in _SUMMARY_COLUMNS)
  body = []
  for region, entry in metrics["regions"].items():
    entry = {**entry, "dice_worst": min(r["dice"] for r in rows if r["region"] == region)}
    cells = "".join(
      f"<td>{_number(entry.get(key), digits)}</td>" for _, key, digits in _SUMMARY_COLUMNS
    )
    body.append(f"<tr><td class='id'>{html.escape(region)}</td>{cells}</tr>")
  return (
    f"<table id='summary'><thead><tr><th class='id'>region</th>{head}</tr></thead>"
    f"<tbody>{''.join(body)}</tbody></table>"
  )


def _patient_table(rows):
  columns = [("patient", "patient_id", None), ("region", "region", None), *_PATIENT_COLUMNS]
  head = "".join(
    f"<th class='sortable{' id' if digits is None else ''}' onclick='sortTable({i})'>"
    f"{html.escape(title)}</th>"
    for i, (title, _, digits) in enumerate(columns)
  )
  body = []
  for row in sorted(rows, key=lambda r: (r["dice"], r["patient_id"], r["region"])):
    cells = "".join(
      f"<td class='id'>{html.escape(str(row[key]))}</td>"
      if digits is None
      else f"<td>{_number(row.get(key), digits)}</td>"
      for _, key, digits in columns
    )
    body.append(f"<tr>{cells}</tr>")
  return (
    f"<table id='patients'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
  )


def _figures(paths, caption=os.path.basename):
  return "".join(
    f"<figure><img src='{html.escape(path)}' alt='{html.escape(caption(path))}'>"
    f"<figcaption>{html.escape(caption(path))}</figcaption></figure>"
    for path in paths
  )


def write_report(
  output_dir: str,
  metrics: dict[str, Any],
  rows: Sequence[dict[str, Any]],
  *,
  overlays: Sequence[str] = (),
  gifs: Sequence[str] = (),
  curves: Sequence[str] = (),
) -> str:
  """Writes `output_dir`/report.html from the metrics and per-patient rows already written,
  linking the overlays, GIFs and training curves this evaluation wrote (paths relative to
  `output_dir`; pictures an earlier evaluation left in the folder are not shown)."""
  inference = metrics.get("inference", {})
  setting = (
    f"{metrics['num_patients']} patients, task {metrics['task']}, threshold "
    f"{metrics['threshold']}, scored on the {metrics.get('grid', 'source')} grid; "
    f"{inference.get('members', 1)} model(s), TTA "
    f"{'on' if inference.get('tta') else 'off'}"
  )
  sections = [
    f"<h1>Evaluation</h1><p>{html.escape(setting)}</p>",
    "<h2>Summary</h2>",
    _summary_table(metrics, rows),
    "<h2>Patients</h2><p>Click a column to sort; worst Dice first.</p>",
    _patient_table(rows),
  ]
  if overlays:
    sections += [
      "<h2>Overlays</h2><p>Green: truth; red: prediction; yellow: both.</p>",
      _figures(list(overlays)),
    ]
  if gifs:
    sections += ["<h2>Through the volume</h2>", _figures(list(gifs))]
  if curves:
    sections += ["<h2>Training curves</h2>", _figures(list(curves))]
  page = (
    f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
    f"<title>Evaluation: {html.escape(metrics['task'])}</title>"
    f"<style>{_STYLE}</style><script>{_SORT_SCRIPT}</script></head>"
    f"<body>{''.join(sections)}</body></html>"
  )
  path = os.path.join(output_dir, REPORT)
  atomic.write_bytes(path, page.encode("utf-8"))
  return path
