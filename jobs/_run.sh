# Sourced by jobs/reproduce_local.sh and jobs/beyond_local.sh.
#   complete DIR... [-- TRAIN ARGS...]   true when every DIR holds a finished run (finished as the
#                                        run's --set overrides ask: a raised run.iterations is not)
#   run NAME PRESET [hpc-es train args...]
# run trains PRESET into $root/NAME on $ranks MPI ranks with --resume auto, or says "done" and
# returns at once when that run is complete; so a script of runs can simply be started again
# after an interruption.
complete() {
  local dirs=() sets=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do dirs+=("$1"); shift; done
  [ $# -gt 0 ] && shift  # the --
  while [ $# -gt 1 ]; do if [ "$1" = --set ]; then sets+=(--set "$2"); shift; fi; shift; done
  python -m hpc_es finished "${dirs[@]}" "${sets[@]}" 2> /dev/null
}

run() {
  local name=$1 preset=$2; shift 2
  local out=$root/$name
  if complete "$out" -- "$@"; then echo "== $name: done"; return; fi
  echo "== $name: $preset $*"
  local start=$SECONDS
  local rc=0
  python -m hpc_es.launchers --mpiexec "${MPIEXEC:-mpiexec}" -n "$ranks" python -m mpi4py -m hpc_es train "$preset" --out "$out" --quiet --resume auto \
    "$@" || rc=$?
  if [ "$rc" != 0 ]; then echo "== $name: failed (exit $rc) after $((SECONDS - start)) s" >&2; return "$rc"; fi
  echo "== $name: $((SECONDS - start)) s"
}

# The figures and a table of every run present under ${HPC_ES_RUNS:-runs} (runs/report.md: the
# local reproduction, local/, and the runs of jobs/beyond_local.sh, each beside the paper's
# figure), then docs/REPRODUCTION.md from the committed archives (docs/runs) alone: archive runs
# there (`hpc-es archive`) to make them count in it. Paths are the ones given here (relative from
# the checkout's root).
write_reproduction() {
  local top=${HPC_ES_RUNS:-runs} at dirs=() d n
  at=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/
  if [ "$(pwd -P)/" = "$(cd "$at" && pwd -P)/" ]; then at=; fi  # in the checkout's root: relative paths
  for d in local rho_tf fig2_tf limited_rho_tf proxy_self layers_tf population_tf t1_40k sigma dose limited_tf \
           layers_small first_order; do
    if [ -d "$top/$d" ]; then dirs+=("$top/$d"); fi
  done
  for n in 1 2 3 4 5; do  # each figure from the runs made for it at local scale
    case $n in 1) d=("$top"/local/fig1_*) ;; 2) d=("$top"/local/fig1_es_* "$top"/local/fig2_*) ;; *) d=("$top"/local/fig${n}_*) ;; esac
    if [ -e "${d[0]}" ]; then python -m hpc_es plot "${d[@]}" --figure "$n" --out "${at}docs/figures"; fi
  done
  if [ ${#dirs[@]} -gt 0 ]; then python -m hpc_es report "${dirs[@]}" > "$top/report.md" && echo "wrote $top/report.md"; fi
  python -m hpc_es reproduction "${at}docs/runs" --write "${at}docs/REPRODUCTION.md"
}
