#!/usr/bin/env bash
# Retrains one searched genotype with each objective and evaluates each student under the same
# attacks (cleverhans PGD-20 etc. + ART's reduced APGD/Square set), then prints one table.
# Usage: scripts/compare_objectives.sh RUN_DIR GENOTYPE TEACHER [TRAIN_FLAGFILE] [EVAL_FLAGFILE] [OBJECTIVES...]
# Example (after the quickstart pipeline):
#   scripts/compare_objectives.sh runs/objectives runs/digits_pipeline/search/genotype.json \
#       runs/digits_pipeline/teacher/teacher.keras
set -euo pipefail
run_dir=$1; genotype=$2; teacher=$3
train_ff=${4:-flags/digits_train.flags}; eval_ff=${5:-flags/digits_eval.flags}
shift $(( $# < 5 ? $# : 5 ))
objectives=${*:-ce logit_kd ce_kd trades_kd}
mkdir -p "$run_dir"
for obj in $objectives; do
  python3 -m rnascl_tf.train --flagfile="$train_ff" --model_dir="$run_dir/$obj" --genotype="$genotype" \
      --teacher_path="$teacher" --objective="$obj" --verbose=2 > "$run_dir/$obj.train.log" 2>&1
  python3 -m rnascl_tf.evaluate --flagfile="$eval_ff" --model="$run_dir/$obj/student.keras" \
      --output_dir="$run_dir/$obj/eval" --autoattack="${AUTOATTACK:-fast}" ${NUM_EXAMPLES:+--num_examples=$NUM_EXAMPLES} \
      > "$run_dir/$obj.eval.log" 2>&1 || echo "evaluate $obj exited $? (see $run_dir/$obj.eval.log)"
done
python3 scripts/objectives_table.py "$run_dir" $objectives | tee "$run_dir/objectives.md"
