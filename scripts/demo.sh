#!/usr/bin/env bash
# The whole job end to end on built-in synthetic BraTS-format data:
# synthetic drops -> convert -> verify -> train -> evaluate -> predict a new patient.
# Each step's own output is shown; TensorFlow's start-up chatter goes to $DEMO_DIR/demo.log.
set -euo pipefail
PYTHON=${PYTHON:-python}
DEMO_DIR=${DEMO_DIR:-demo_out}
mkdir -p "$DEMO_DIR"
LOG="$DEMO_DIR/demo.log"
: > "$LOG"
trap 'echo "demo failed; the last lines of $LOG:"; tail -20 "$LOG"' ERR
start=$(date +%s)
step() { "$@" 2>>"$LOG"; }

echo "== 1/6 synthetic BraTS drops (NIfTI cases and Kaggle h5 slices) -> $DEMO_DIR/source"
step $PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/source/nifti" --num_patients=10 \
  --format=nifti --seed=0
step $PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/source/h5" --num_patients=4 \
  --first_patient=11 --format=h5 --seed=0
step $PYTHON -m data_prep.synthetic_main --output_dir="$DEMO_DIR/new_patient" --num_patients=1 \
  --first_patient=15 --format=nifti --seed=0

echo "== 2/6 convert -> $DEMO_DIR/tfrecords"
step $PYTHON -m data_prep.convert_main --input="$DEMO_DIR/source/nifti" \
  --output_dir="$DEMO_DIR/tfrecords" --drop=synthetic-nifti --overlays=4 --progress=false
step $PYTHON -m data_prep.convert_main --input="$DEMO_DIR/source/h5" \
  --output_dir="$DEMO_DIR/tfrecords" --drop=synthetic-h5 --overlays=2 --progress=false

echo "== 3/6 verify"
step $PYTHON -m data_prep.verify_main --data_dir="$DEMO_DIR/tfrecords"

echo "== 4/6 train (configs/demo.flags; validation fold 0) -> $DEMO_DIR/run"
step $PYTHON train_main.py --flagfile=configs/demo.flags --data_dir="$DEMO_DIR/tfrecords" \
  --model_dir="$DEMO_DIR/run" | grep -E "^[0-9]+/[0-9]+ -|^trained" || true
test -f "$DEMO_DIR/run/best_model.h5"

echo "== 5/6 evaluate fold 0 per patient -> $DEMO_DIR/run/eval"
step $PYTHON eval_main.py --data_dir="$DEMO_DIR/tfrecords" --model_dir="$DEMO_DIR/run" --fold=0 \
  --save_predictions --gif_scale=1

echo "== 6/6 predict a new patient -> $DEMO_DIR/prediction"
step $PYTHON predict_main.py --model_dir="$DEMO_DIR/run" --input="$DEMO_DIR/new_patient" \
  --output_dir="$DEMO_DIR/prediction"

echo
echo "demo finished in $(( $(date +%s) - start )) s on $($PYTHON -c \
  'from data_prep import machine; print(machine.cpu_model())')"
echo "  converted drops:   $DEMO_DIR/tfrecords/*/manifest.json (overlays in */overlays/)"
echo "  training:          $DEMO_DIR/run/ (best_model.keras, best_model.h5, history.csv, training_curves.png)"
echo "  TF Serving:        $DEMO_DIR/run/saved_model/ (docs/deploy.md)"
echo "  TensorBoard:       tensorboard --logdir $DEMO_DIR/run/tensorboard"
echo "  evaluation:        $DEMO_DIR/run/eval/report.html (and metrics.json, per_patient.csv, overlays/, gifs/)"
echo "  new patient mask:  $DEMO_DIR/prediction/*_pred.nii.gz and *_pred.gif"
