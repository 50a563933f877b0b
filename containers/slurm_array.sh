#!/usr/bin/env bash
# One bidsdeid participant per SLURM array task, all writing into one OUTPUT_DIR.
#
#   1. List the labels once (this also creates the shared key in the private dir):
#        bidsdeid INPUT OUTPUT participant --private-dir PRIVATE --list-participants > labels.txt
#   2. Submit one task per label:
#        sbatch --array=1-$(wc -l < labels.txt) containers/slurm_array.sh INPUT OUTPUT PRIVATE labels.txt
#
# Every task uses the same private dir, hence the same key: labels, UIDs and date shifts agree
# across tasks. participants.tsv and the mapping tables are updated under file locks. Set
# BIDSDEID to the command to run (default: bidsdeid on PATH; e.g. "apptainer run bidsdeid.sif").
#SBATCH --job-name=bidsdeid
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
set -euo pipefail

if [ $# -ne 4 ]; then
  echo "usage: sbatch --array=1-N $0 INPUT_DIR OUTPUT_DIR PRIVATE_DIR LABELS_FILE" >&2
  exit 2
fi
input_dir=$1 output_dir=$2 private_dir=$3 labels_file=$4
task=${SLURM_ARRAY_TASK_ID:?run this script as a SLURM array job}
label=$(sed -n "${task}p" "$labels_file")
if [ -z "$label" ]; then
  echo "no label on line $task of $labels_file" >&2
  exit 2
fi
work_dir=${TMPDIR:-/tmp}/bidsdeid-${SLURM_ARRAY_JOB_ID:-0}-${task}
mkdir -p "$work_dir"
trap 'rm -rf "$work_dir"' EXIT

${BIDSDEID:-bidsdeid} "$input_dir" "$output_dir" participant \
  --participant-label "$label" --private-dir "$private_dir" \
  --work-dir "$work_dir" --n-procs "${SLURM_CPUS_PER_TASK:-1}" --verify
