#!/usr/bin/env bash
# The main job end to end on built-in synthetic BraTS-format data:
# synthetic drop -> convert -> verify -> (train, evaluate, draw: later issues).
set -euo pipefail
PYTHON=${PYTHON:-python}
DEMO_DIR=${DEMO_DIR:-demo_out}
start=$(date +%s)

echo "== 1/3 synthetic BraTS drop (Kaggle h5 slices and NIfTI cases) -> $DEMO_DIR/source"
$PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/source/nifti" --num_patients=10 \
  --format=nifti --seed=0
$PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/source/h5" --num_patients=4 \
  --first_patient=11 --format=h5 --seed=0

echo "== 2/3 convert -> $DEMO_DIR/tfrecords"
$PYTHON -m data_prep.convert_main --input="$DEMO_DIR/source/nifti" --output_dir="$DEMO_DIR/tfrecords" \
  --drop=synthetic-nifti --overlays=4 --progress=false
$PYTHON -m data_prep.convert_main --input="$DEMO_DIR/source/h5" --output_dir="$DEMO_DIR/tfrecords" \
  --drop=synthetic-h5 --overlays=2 --progress=false

echo "== 3/3 verify"
$PYTHON -m data_prep.verify_main --data_dir="$DEMO_DIR/tfrecords"

echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "  drops:     $DEMO_DIR/tfrecords/*/manifest.json"
echo "  overlays:  $DEMO_DIR/tfrecords/*/overlays/*.png"
