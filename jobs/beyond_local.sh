#!/usr/bin/env bash
# The paper-scale runs a small machine affords, Table 1 at the paper's 40,000 iterations and the
# questions the paper leaves open (docs/RESULTS.md, issues 12 and 15); then their tables and figures.
#   jobs/beyond_local.sh [SECTION...]    (default: all; results under ${HPC_ES_RUNS:-runs})
# Each SECTION is the campaign file campaigns/SECTION.toml (its header says what and how long),
# run by `hpc-es campaign run` with $HPC_ES_JOBS ranks at a time (default: the cores):
#   paper        the paper-scale measurements that fit here (rho at N = 10,000, Fig. 2 as proxy
#                and SGD, limited ES's rho, the population for 20%)           (~9 core-hours)
#   table1       Table 1's three arms at 40,000 iterations, small net, 5 seeds  (~4.5)
#   sigma        ES at sigma 0.002..0.2 beside a proxy that follows its rho, 3 seeds (~4.3)
#   limited      tf_tutorial proxies at limited and full ES's measured rho, 5 seeds each (~3.8)
#   dose         SGD and proxies at rho 1..64%, small net, 10,000 iterations, 5 seeds (~3.5)
#   layers       per-layer rho: real ES at thetas the tf_tutorial proxy kept; ES on the small net
#                to 1,200 iterations                                          (~2.1)
#   first_order  first-order ES (issue 27, ours): its validation, sigma twins, Fig. 3's limited
#                arm, SGD and Fig. 1 / Fig. 3's full arm at paper scale       (~11)
#   report       the tables and figures of whatever is complete, then docs/REPRODUCTION.md
# Every run resumes if interrupted and is skipped once complete: start the script again.
# Core-hours as measured on this project's 2-core VMs (docs/RESULTS.md).
set -uo pipefail
home=$(cd "$(dirname "$0")/.." && pwd)
root=${HPC_ES_RUNS:-runs}
max_jobs=${HPC_ES_JOBS:-$(nproc)}
export HPC_ES_THREADS=${HPC_ES_THREADS:-1}
venv=${HPC_ES_VENV:-$home/.venv}  # as jobs/local.sh: the checkout's environment if there is one
if [ -f "$venv/bin/activate" ]; then . "$venv/bin/activate"; fi
. "$home/jobs/_report.sh"
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(paper table1 sigma limited dose layers first_order report)
for s in "${sections[@]}"; do
  case "$s" in paper|table1|sigma|limited|dose|layers|first_order|report) ;;
    *) echo "jobs/beyond_local.sh: unknown section '$s' (expected paper table1 sigma limited dose layers" \
            "first_order report)" >&2
       exit 2 ;;
  esac
done
wants() { [[ " ${sections[*]} " == *" $1 "* ]]; }

failed=0
for c in paper table1 sigma limited dose layers first_order; do  # each section is campaigns/$c.toml
  if wants "$c"; then
    python -m hpc_es campaign run "$home/campaigns/$c.toml" --root "$root" --jobs "$max_jobs" || failed=$((failed + 1))
  fi
done
[ "$failed" = 0 ] || echo "jobs/beyond_local.sh: $failed sections had failed runs (see above); the tables below leave them out" >&2

wants report || exit "$((failed > 0))"
# The tables and figures of whatever is complete (each step says so when its runs are missing).
report() {  # report TITLE COMMAND...
  echo "== $1"; shift
  "$@" || echo "   (not yet: the runs it needs are missing or incomplete)"
}
figs=$home/docs/figures
units=()  # per-unit costs: this machine's (benchmarks/out) first, then those kept beside the runs (docs/runs)
for f in "$home/benchmarks/out/units.json" "$home"/docs/runs/units*.json; do
  if [ -f "$f" ]; then units+=(--units "$f"); fi
done
report "Table 1 at 40,000 iterations, small net" python -m hpc_es dose "$root/t1_40k" --at 40000 --out "$figs/table1"
report "dose-response, small net, at 10,000 iterations" python -m hpc_es dose "$root/dose" \
  --at 10000 "${units[@]}" --out "$figs/dose"
report "limited vs full ES as proxies, tf_tutorial, at 2,000 iterations" python -m hpc_es dose "$root/fig2_tf" "$root/limited_tf" \
  --at 2000 --pair 0.039,0.101 --pair 0.039,0.089 --out "$figs/limited"
report "the proxy against ES at each sigma" python -m hpc_es gap "$root/sigma" --out "$figs/sigma"
report "which layers ES gets right, small net" python -m hpc_es plot "$root/layers_small/es" --layers --out "$figs/layers"
report "docs/REPRODUCTION.md from every run present" write_reproduction
exit "$((failed > 0))"
