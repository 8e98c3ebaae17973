# Sourced by jobs/reproduce_local.sh and jobs/beyond_local.sh.
#   complete DIR...                      true when every DIR holds a finished run
#   run NAME PRESET [hpc-es train args...]
# run trains PRESET into $root/NAME on $ranks MPI ranks with --resume auto, or says "done" and
# returns at once when that run is complete; so a script of runs can simply be started again
# after an interruption.
complete() {
  local dir
  for dir in "$@"; do
    [ -f "$dir/results.h5" ] && [ ! -f "$dir/.lock" ] || return 1
  done
  python - "$@" <<'PY'
import sys
from hpc_es import io
for out in sys.argv[1:]:
    res = io.read_results(out + "/results.h5")
    if res["completed_iterations"] < res["config"]["run"]["iterations"]:
        sys.exit(1)
PY
}

run() {
  local name=$1 preset=$2; shift 2
  local out=$root/$name
  if complete "$out"; then echo "== $name: done"; return; fi
  echo "== $name: $preset $*"
  local start=$SECONDS
  local rc=0
  "${MPIEXEC:-mpiexec}" -n "$ranks" python -m mpi4py -m hpc_es train "$preset" --out "$out" --quiet --resume auto \
    "$@" || rc=$?
  if [ "$rc" != 0 ]; then echo "== $name: failed (exit $rc) after $((SECONDS - start)) s" >&2; return "$rc"; fi
  echo "== $name: $((SECONDS - start)) s"
}
