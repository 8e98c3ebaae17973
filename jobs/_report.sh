# Sourced by jobs/reproduce_local.sh and jobs/beyond_local.sh: write_reproduction.
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
