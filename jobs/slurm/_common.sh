# Sourced by every jobs/slurm/*.sbatch after it sets PRESET (and optionally COMMAND=table1).
# Runs one experiment with srun, one thread per rank, results and checkpoints on the shared file
# system, resuming automatically when the job comes back after a requeue or a resubmission.
#
# Environment (all optional):
#   HPC_ES_HOME    the hpc_es checkout (default: the directory sbatch was called from)
#   HPC_ES_VENV    virtual environment to activate (default: $HPC_ES_HOME/.venv, if present)
#   HPC_ES_RUNS    where run directories go (default: $SCRATCH/hpc_es_runs, else $HOME/hpc_es_runs)
#   HPC_ES_PRESET  run another preset with this script's resources (e.g. a *_local one to test)
#   HPC_ES_ARGS    extra arguments for hpc-es, e.g. "--set run.iterations=10"
#   HPC_ES_SRUN    launcher (default: "srun --mpi=pmi2"; e.g. "srun" where PMIx is the default)
#   HPC_ES_REQUEUE 1 (default): after a preemption checkpoint (exit 75), requeue this job itself
# Arguments: --dry-run prints the resolved command and the layout it would run with, and exits.
# Several nodes: sbatch --nodes=N --ntasks-per-node=K jobs/slurm/X.sbatch (the header's --ntasks
# is overridden); each node builds its own copy of the noise table in shared memory.
# Run directory: $HPC_ES_RUNS/<preset>/seed<N>, N = $SLURM_ARRAY_TASK_ID (else 0), so a requeued
# or resubmitted job finds its checkpoint and continues (--resume auto).
set -euo pipefail
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    *) echo "unknown argument: $arg (accepted: --dry-run)" >&2; exit 2 ;;
  esac
done
home=${HPC_ES_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
if [ ! -f "$home/jobs/slurm/_common.sh" ]; then
  echo "HPC_ES_HOME=$home is not an hpc_es checkout: submit from the checkout or set HPC_ES_HOME" >&2
  exit 2
fi
venv=${HPC_ES_VENV:-$home/.venv}
if [ -f "$venv/bin/activate" ]; then . "$venv/bin/activate"; fi
preset=${HPC_ES_PRESET:-$PRESET}
command=${COMMAND:-train}
seed=${SLURM_ARRAY_TASK_ID:-0}
runs=${HPC_ES_RUNS:-${SCRATCH:-$HOME}/hpc_es_runs}
out=$runs/$preset/seed$seed
export HPC_ES_THREADS=${SLURM_CPUS_PER_TASK:-1} OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

args=("$command" "$preset" --out "$out")
if [ "$command" = train ]; then
  args+=(--set "run.seed=$seed" --resume auto)  # continue from a checkpoint if an earlier leg left one
fi
read -r -a extra <<< "${HPC_ES_ARGS:-}"
read -r -a launcher <<< "${HPC_ES_SRUN:-srun --mpi=pmi2}"
cmd=("${launcher[@]}" python -m mpi4py -m hpc_es "${args[@]}" "${extra[@]}")
if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  # srun takes the layout from the allocation (sbatch --nodes / --ntasks-per-node override the
  # header): nothing in the command depends on the node count.
  echo "# layout: ${SLURM_JOB_NUM_NODES:-?} node(s), ${SLURM_NTASKS:-?} ranks, $HPC_ES_THREADS thread(s) per" \
       "rank, one noise table per node; run directory $out (on a file system every node sees)"
  exit 0
fi
mkdir -p "$runs/$preset"
echo "$(date -Is) job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NUM_NODES:-?} node(s), ${SLURM_NTASKS:-?} ranks: ${cmd[*]}"
rc=0
"${cmd[@]}" || rc=$?
if [ "$rc" = 75 ]; then  # preempted or near the time limit: every rank checkpointed and stopped
  echo "$(date -Is) checkpoint written in $out; the job continues with --resume when it runs again"
  if [ "${HPC_ES_REQUEUE:-1}" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    scontrol requeue "$SLURM_JOB_ID"
  fi
  exit 0
fi
exit "$rc"
