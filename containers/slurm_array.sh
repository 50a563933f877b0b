#!/usr/bin/env bash
# One bidsdeid participant per SLURM array task, all tasks writing into one OUTPUT_DIR.
#
#   1. List the labels once (this also creates the shared key in PRIVATE_DIR):
#        bidsdeid INPUT OUTPUT participant --private-dir PRIVATE --list-participants > labels.txt
#   2. Submit one task per line of labels.txt; options after LABELS_FILE go to bidsdeid:
#        sbatch --array=1-$(wc -l < labels.txt) --output=PRIVATE/logs/slurm-%A_%a.out \
#          containers/slurm_array.sh INPUT OUTPUT PRIVATE labels.txt [--no-deface ...]
#   3. Then once, after all tasks: bidsdeid INPUT OUTPUT group --private-dir PRIVATE
#
# Every task uses the same PRIVATE_DIR, hence the same key: labels, UIDs and date shifts agree
# across tasks. participants.tsv, dataset_description.json and the mapping tables are updated
# under file locks and replaced atomically, so tasks may run at once in any order. A task that
# was killed leaves only whole files (and hidden temp files); resubmitting its index
# (sbatch --array=N ...) cleans up and completes the participant. Re-running a finished one
# rewrites nothing. OUTPUT_DIR and PRIVATE_DIR must be on a shared file system whose locks work
# across nodes (NFSv4; Lustre mounted with -o flock; GPFS).
#
# SLURM's own log files hold console output, which names input files (and so may name
# patients): send them to the private dir with --output as above, never into OUTPUT_DIR.
#
# BIDSDEID is the command to run (default: bidsdeid on PATH), e.g. for the container image:
#   BIDSDEID="apptainer run --bind /data bidsdeid.sif" sbatch ...
# The scratch folder is $TMPDIR (node-local on most clusters) and is removed at the end.
#SBATCH --job-name=bidsdeid
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: sbatch --array=1-N $0 INPUT_DIR OUTPUT_DIR PRIVATE_DIR LABELS_FILE [OPTION...]" >&2
  exit 2
fi
input_dir=$1 output_dir=$2 private_dir=$3 labels_file=$4
shift 4
task=${SLURM_ARRAY_TASK_ID:?run this script as a SLURM array job (sbatch --array=1-N)}
label=$(sed -n "${task}p" "$labels_file" | tr -d "[:space:]")  # no stray CR or blanks
if [ -z "$label" ]; then
  echo "no label on line $task of $labels_file" >&2
  exit 2
fi

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/bidsdeid-${SLURM_ARRAY_JOB_ID:-0}-${task}.XXXXXX")
trap 'rm -rf "$work_dir"' EXIT

# One worker process per allocated CPU; each worker single-threaded, so that PyTorch and the
# BLAS libraries do not start a thread per core of the whole node.
n_procs=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# The workers' memory budget: 90% of the allocation (--mem, or --mem-per-cpu times the CPUs),
# the rest for the main process. Fewer series then run at once when they are large.
mem_mb=${SLURM_MEM_PER_NODE:-$(( ${SLURM_MEM_PER_CPU:-0} * n_procs ))}
mem_options=()
if [ "$mem_mb" -gt 0 ]; then
  mem_options=(--mem-gb "$(awk -v mb="$mem_mb" 'BEGIN { printf "%.2f", mb * 0.9 / 1024 }')")
fi

read -r -a bidsdeid_cmd <<< "${BIDSDEID:-bidsdeid}"
"${bidsdeid_cmd[@]}" "$input_dir" "$output_dir" participant \
  --participant-label "$label" --private-dir "$private_dir" \
  --work-dir "$work_dir" --n-procs "$n_procs" "${mem_options[@]}" --verify "$@"
