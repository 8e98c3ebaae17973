#!/usr/bin/env bash
# Run one experiment (a preset) on this machine with mpiexec.
#   jobs/local.sh EXPERIMENT [RANKS] [--dry-run] [-- EXTRA hpc-es ARGS...]
# EXPERIMENT is a preset (`hpc-es presets`; table1_* presets run `hpc-es table1`); RANKS defaults
# to the number of cores. Results go to ${HPC_ES_RUNS:-runs}/EXPERIMENT; run it again after an
# interruption and it resumes from the last checkpoint.
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2
fi
preset=$1; shift
ranks=$(nproc)
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then ranks=$1; shift; fi
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "unknown argument: $1 (expected RANKS, --dry-run or -- EXTRA...)" >&2; exit 2 ;;
  esac
done
out=${HPC_ES_RUNS:-runs}/$preset
command=train
case "$preset" in table1_*) command=table1 ;; esac
args=("$command" "$preset" --out "$out")
if [ "$command" = train ]; then
  for f in checkpoint.h5 checkpoint.h5.new checkpoint.prev.h5; do
    if [ -f "$out/$f" ]; then args+=(--resume); break; fi
  done
fi
mpiexec=${MPIEXEC:-mpiexec}
cmd=("$mpiexec" -n "$ranks" python -m mpi4py -m hpc_es "${args[@]}" "$@")
if [ "$dry_run" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
export HPC_ES_THREADS=${HPC_ES_THREADS:-1}
exec "${cmd[@]}"
