#!/usr/bin/env bash
# Render a prompt list on a Slurm job array: task k of N renders shard k/N of the list.
#
#   sbatch examples/sbatch_array.sh prompts.txt renders --seeds 0-3
#
# Every task appends to its own manifest (renders/manifest.shard-K-of-N.jsonl) and writes
# its PNGs atomically, so tasks never step on each other. Re-submitting the same array (or
# a requeue after preemption or a time limit) resumes: finished items are skipped, temp files
# of this shard are swept. Slurm's SIGTERM at the time limit is recorded as "interrupted".
#
#SBATCH --job-name=clipforge-batch
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=clipforge-%A_%a.log
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: sbatch $0 LIST OUT [clipforge batch options...]" >&2
    exit 2
fi
list=$1
out=$2
shift 2

# --array=1-8 or 0-7: count shards from the array's first index
task=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))
count=${SLURM_ARRAY_TASK_COUNT:?run this with sbatch --array}

exec "${CLIPFORGE:-clipforge}" batch "$list" --out "$out" --shard "$task/$count" --quiet "$@"
