#!/usr/bin/env bash
# K-fold cross-validation on real cases, judged at full resolution through predict_main.py.
#   scripts/cross_validate.sh SOURCE_DIR DATA_DIR RUNS_DIR [FLAGFILE] [FOLDS...]
# For each fold k: train with --val_fold=k, then predict the fold's own cases from their
# source NIfTI files (which that model never trained on) and print their Dice.
set -euo pipefail
SOURCE_DIR=$1; DATA_DIR=$2; RUNS_DIR=$3; FLAGFILE=${4:-configs/cpu.flags}; shift 4 || shift $#
FOLDS=${*:-0 1 2 3 4}
PYTHON=${PYTHON:-python}
quiet() { grep -v -E "^(WARNING: All log messages|[IWE]0000 |To enable the following)" || true; }
for fold in $FOLDS; do
  start=$(date +%s)
  run="$RUNS_DIR/fold$fold"
  $PYTHON train_main.py --flagfile="$FLAGFILE" --data_dir="$DATA_DIR" --model_dir="$run" \
    --val_fold="$fold" 2>&1 | quiet | grep -E "^trained|error" || true
  cases="$run/fold_cases"
  rm -rf "$cases" && mkdir -p "$cases"
  $PYTHON - "$DATA_DIR" "$fold" "$SOURCE_DIR" "$cases" <<'PY'
import os, sys
from input_pipeline import manifests
data_dir, fold, source, cases = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for patient in manifests.load_layout(data_dir, [fold]).patients:
  os.symlink(os.path.abspath(os.path.join(source, patient)), os.path.join(cases, patient))
PY
  $PYTHON predict_main.py --model_dir="$run" --input="$cases" --output_dir="$run/predictions" \
    --nogif 2>>"$run/predict.log" | tee "$run/full_resolution_dice.txt"
  echo "fold $fold: $(( $(date +%s) - start )) s"
done
