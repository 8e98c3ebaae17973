#!/usr/bin/env bash
# Run one experiment (a preset) on this machine with mpiexec.
#   jobs/local.sh EXPERIMENT [RANKS] [--dry-run] [-- EXTRA hpc-es ARGS...]
# EXPERIMENT is a preset (`hpc-es presets`; Table 1 configs run `hpc-es table1`); RANKS defaults
# to the number of cores. Results go to ${HPC_ES_RUNS:-runs}/EXPERIMENT; run it again after an
# interruption and it resumes from the last checkpoint (`--resume auto`).
# Like the Slurm scripts, it activates $HPC_ES_VENV (default: the checkout's .venv) if present.
# Time: what the preset's own header says (e.g. es_small_local: ~5 min on 2 ranks).
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2
fi
home=$(cd "$(dirname "$0")/.." && pwd)
preset=$1; shift
ranks=$(nproc)
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then ranks=$1; shift; fi
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "jobs/local.sh: unknown argument: $1 (expected RANKS, --dry-run or -- EXTRA...)" >&2; exit 2 ;;
  esac
done
if [ "$ranks" -lt 1 ]; then echo "jobs/local.sh: RANKS=$ranks: expected a positive integer" >&2; exit 2; fi
if [[ "$preset" != *.toml ]] && [ ! -f "$home/hpc_es/presets/$preset.toml" ]; then
  known=$(cd "$home/hpc_es/presets" && ls -- *.toml | sed 's/\.toml$//')
  guess=$(python3 -c 'import difflib, sys; print(" or ".join(difflib.get_close_matches(sys.argv[1], sys.argv[2:], 3)))' \
          "$preset" $known 2>/dev/null || true)
  echo "jobs/local.sh: no preset '$preset'${guess:+ (did you mean $guess?)}; presets: $(echo $known)" >&2
  exit 2
fi
if [[ "$preset" == *.toml ]] && [ ! -f "$preset" ]; then
  echo "jobs/local.sh: config file $preset not found" >&2; exit 2
fi
venv=${HPC_ES_VENV:-$home/.venv}
if [ -f "$venv/bin/activate" ]; then . "$venv/bin/activate"; fi
name=$(basename "$preset" .toml)
out=${HPC_ES_RUNS:-runs}/$name
# "KIND hpc-es COMMAND" (Table 1 configs run `hpc-es table1`); where hpc_es is not importable,
# train: the launch below then says what is missing, or hpc-es says what is wrong with the config
kind=$(python -m hpc_es kind "$preset" 2> /dev/null) || kind=train
command=${kind##* }
args=("$command" "$preset" --out "$out")
if [ "$command" = train ]; then args+=(--resume auto); fi
mpiexec=${MPIEXEC:-mpiexec}
# Through hpc_es.launchers: the launcher's environment for its MPI implementation, and a SIGTERM
# passed on as that launcher needs it (Open MPI's gets SIGUSR1), so preemption still checkpoints.
cmd=(python -m hpc_es.launchers --mpiexec "$mpiexec" -n "$ranks" python -m mpi4py -m hpc_es "${args[@]}" "$@")
if [ "$dry_run" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
if ! command -v "$mpiexec" > /dev/null; then
  echo "jobs/local.sh: $mpiexec not found: install hpc_es into $venv (pip install -e \".[mpich]\"), activate" \
       "an environment that has an MPI, or set MPIEXEC" >&2
  exit 2
fi
export HPC_ES_THREADS=${HPC_ES_THREADS:-1}
exec "${cmd[@]}"
