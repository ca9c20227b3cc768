"""The Slurm backend.

- `options.py`: the spec's `slurm:` section (the `vlaunch slurm` flags are generated from it);
- `render.py`: `build_request(spec) -> SlurmRequest`, the sbatch script and the files it needs
  (what `--dry-run` prints), and the `slurm/srun_*.sh` entry points;
- `submit.py`: checks before submitting (sbatch on PATH, the partition), `submit(request)`;
- `control.py`: `status`, `logs`, `cancel` of a job (`vlaunch status|logs|cancel`);
- `variants.py`: VILA's `srun_*` names as spec overrides.
"""
