"""Writes synthetic BraTS patients, so the converter, trainer and tests run without real data.

python -m data_prep.synthetic_main --output_dir=D --num_patients=N --format=h5|nifti --seed=S
"""

import sys
import time

from absl import app
from absl import flags
from absl import logging
import tqdm

from data_prep import synthetic

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder to write into (created if missing).")
_NUM_PATIENTS = flags.DEFINE_integer("num_patients", 8, "How many patients to write.")
_FORMAT = flags.DEFINE_enum(
  "format",
  "h5",
  synthetic.FORMATS,
  "h5: Kaggle BraTS2020 slice files; nifti: official case folders.",
)
_SEED = flags.DEFINE_integer(
  "seed", 0, "Same seed and patient number give the same patient in every format."
)
_NAMING = flags.DEFINE_enum(
  "naming",
  "2018",
  synthetic.NAMINGS,
  "NIfTI naming: 2018 (BraTS 2018-2021, enhancing = 4) or 2023 (GLI, enhancing = 3).",
)
_NUM_SLICES = flags.DEFINE_integer(
  "num_slices", synthetic.DEFAULT_NUM_SLICES, "Axial slices per patient."
)
_COMPRESSED = flags.DEFINE_bool(
  "compressed", True, "NIfTI as .nii.gz; false writes .nii like the Kaggle mirror."
)
_FIRST_PATIENT = flags.DEFINE_integer("first_patient", 1, "Number of the first patient written.")

flags.mark_flags_as_required(["output_dir"])
flags.register_validator(
  "num_patients", lambda value: value >= 1, message="--num_patients must be at least 1"
)
flags.register_validator(
  "num_slices",
  lambda value: value >= synthetic.MIN_NUM_SLICES,
  message=f"--num_slices must be at least {synthetic.MIN_NUM_SLICES}",
)
flags.register_validator(
  "first_patient", lambda value: value >= 1, message="--first_patient must be at least 1"
)


@flags.multi_flags_validator(["num_patients", "first_patient", "format", "naming"])
def _check_patient_numbers(values):
  """The last patient number must fit the case id (3 digits; 5 for 2023 NIfTI)."""
  if values["format"] == "h5" and values["naming"] != "2018":
    raise flags.ValidationError("--naming applies to --format=nifti only (h5 files are BraTS 2020)")
  numbering = values["naming"] if values["format"] == "nifti" else "2018"
  if values["num_patients"] is None or values["first_patient"] is None:
    return True
  last = values["first_patient"] + values["num_patients"] - 1
  limit = synthetic.MAX_PATIENT_NUMBER[numbering]
  if last > limit:
    raise flags.ValidationError(
      f"last patient number {last} (--first_patient + --num_patients - 1) exceeds {limit} "
      "for this naming"
    )
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.info(
    "Writing %d synthetic patients (%s, seed %d, %d slices) to %s",
    _NUM_PATIENTS.value,
    _FORMAT.value,
    _SEED.value,
    _NUM_SLICES.value,
    _OUTPUT_DIR.value,
  )
  start = time.perf_counter()
  written = synthetic.generate(
    _OUTPUT_DIR.value,
    _NUM_PATIENTS.value,
    fmt=_FORMAT.value,
    seed=_SEED.value,
    naming=_NAMING.value,
    num_slices=_NUM_SLICES.value,
    compressed=_COMPRESSED.value,
    first_patient=_FIRST_PATIENT.value,
    progress=lambda numbers: tqdm.tqdm(numbers, desc="patients", unit="patient", file=sys.stderr),
  )
  seconds = time.perf_counter() - start
  print(
    f"synthetic: {_NUM_PATIENTS.value} patients, {len(written)} files ({_FORMAT.value}) "
    f"in {_OUTPUT_DIR.value}, {seconds:.1f} s"
  )


def run():
  app.run(main)


if __name__ == "__main__":
  run()
