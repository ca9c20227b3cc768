#!/bin/bash
#SBATCH --job-name=srun_fft_vt
#SBATCH --output=%x-%j.out
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#
# VILA's `srun_fft_vt`, for plain sbatch:
#
#   sbatch [sbatch options] slurm/srun_fft_vt.sh JOB.yaml [key=value ...]
#   sbatch --nodes=2 --gpus-per-node=8 --partition=gpu --time=04:00:00 slurm/srun_fft_vt.sh job.yaml
#
# Trains JOB.yaml with the tuning preset `fft_vt`: full fine-tuning of the vision tower only.
#
# The same job as
# `vlaunch slurm JOB.yaml --variant srun_fft_vt` from a login node: inside the allocation it
# renders the vlaunch job script for it (`vlaunch slurm --in-allocation`: nodes and GPUs from
# the allocation, the script and resolved spec in the run's slurm/ folder) and runs it: Ray
# across the nodes, the trainer driver, a checkpoint and a requeue on SIGUSR1 before the time
# limit. JOB.yaml is read again when the job is requeued.
#
# Generated from slurm/templates/entrypoint.sh.j2 (`make golden`); do not edit.
set -euo pipefail
if ! command -v vlaunch >/dev/null; then
  echo "error: vlaunch is not on PATH in the job: activate its environment before sbatch" >&2
  exit 2
fi
exec vlaunch slurm --variant srun_fft_vt --in-allocation "$@"
