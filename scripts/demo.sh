#!/usr/bin/env bash
# The whole job end to end on built-in synthetic BraTS-format data:
# synthetic drops -> convert -> verify -> train -> evaluate -> predict a new patient.
set -euo pipefail
PYTHON=${PYTHON:-python}
DEMO_DIR=${DEMO_DIR:-demo_out}
start=$(date +%s)
quiet() { grep -v -E "^(WARNING: All log messages|[IWE]0000 |To enable the following)" || true; }

echo "== 1/6 synthetic BraTS drops (NIfTI cases and Kaggle h5 slices) -> $DEMO_DIR/source"
$PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/source/nifti" --num_patients=10 \
  --format=nifti --seed=0 2>&1 | quiet
$PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/source/h5" --num_patients=4 \
  --first_patient=11 --format=h5 --seed=0 2>&1 | quiet
$PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/new_patient" --num_patients=1 \
  --first_patient=15 --format=nifti --seed=0 2>&1 | quiet

echo "== 2/6 convert -> $DEMO_DIR/tfrecords"
$PYTHON -m data_prep.convert_main --input="$DEMO_DIR/source/nifti" --output_dir="$DEMO_DIR/tfrecords" \
  --drop=synthetic-nifti --overlays=4 --progress=false 2>&1 | quiet
$PYTHON -m data_prep.convert_main --input="$DEMO_DIR/source/h5" --output_dir="$DEMO_DIR/tfrecords" \
  --drop=synthetic-h5 --overlays=2 --progress=false 2>&1 | quiet

echo "== 3/6 verify"
$PYTHON -m data_prep.verify_main --data_dir="$DEMO_DIR/tfrecords" 2>&1 | quiet

echo "== 4/6 train (configs/demo.flags; validation fold 0) -> $DEMO_DIR/run"
$PYTHON train_main.py --flagfile=configs/demo.flags --data_dir="$DEMO_DIR/tfrecords" \
  --model_dir="$DEMO_DIR/run" 2>&1 | quiet | grep -E "^[0-9]+/[0-9]+ -|^trained|error" || true
test -f "$DEMO_DIR/run/best_model.keras"

echo "== 5/6 evaluate fold 0 per patient -> $DEMO_DIR/run/eval"
$PYTHON eval_main.py --data_dir="$DEMO_DIR/tfrecords" --model_dir="$DEMO_DIR/run" --fold=0 \
  --save_predictions 2>&1 | quiet | grep -v "evaluating:"

echo "== 6/6 predict a new patient -> $DEMO_DIR/prediction"
$PYTHON predict_main.py --model_dir="$DEMO_DIR/run" --input="$DEMO_DIR/new_patient" \
  --output_dir="$DEMO_DIR/prediction" 2>&1 | quiet | grep -v "predicting:"

echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "  converted drops:   $DEMO_DIR/tfrecords/*/manifest.json (overlays in */overlays/)"
echo "  training:          $DEMO_DIR/run/ (best_model.keras, best_model.h5, history.csv, training_curves.png)"
echo "  TensorBoard:       tensorboard --logdir $DEMO_DIR/run/tensorboard"
echo "  evaluation:        $DEMO_DIR/run/eval/ (metrics.json, per_patient.csv, overlays/, gifs/)"
echo "  new patient mask:  $DEMO_DIR/prediction/*_pred.nii.gz and *_pred.gif"
