#!/usr/bin/env bash
# The paper-scale runs a small machine affords, Table 1 at the paper's 40,000 iterations and the
# questions the paper leaves open (docs/RESULTS.md, issues 12 and 15); then their tables and figures.
#   jobs/beyond_local.sh [SECTION...]    (default: all; results under ${HPC_ES_RUNS:-runs})
# SECTION: paper   campaigns/paper.toml: the paper-scale measurements that fit here, tf_tutorial: rho at N = 10,000
#                  along 20 iterations (initial and trained theta), Fig. 2 as proxy and SGD (3
#                  seeds), limited ES's rho, the population for 20% (checkpointed every 20 blocks
#                  of 1,000)                                                  (~9 core-hours)
#          table1  campaigns/table1.toml: Table 1's three arms, small net, 40,000 iterations, 5 seeds
#                  (~4.5 core-hours)
#          sigma   campaigns/sigma.toml: ES at sigma 0.002..0.2 beside a proxy that follows its rho,
#                  3 seeds (~4.3)
#          limited campaigns/limited.toml: tf_tutorial proxies at limited ES's rho (10.1%, 8.9%) and full ES's (3.9%),
#                  2,000 iterations, 5 seeds each (~3.8)
#          dose    campaigns/dose.toml: SGD and proxies at rho 1..64%, small net, 10,000 it., 5 seeds (~3.5)
#          layers  ES on the small net to >= 90% with per-layer rho logged; tf_tutorial: the
#                  proxy (seed 0, its SGD self-correlation logged) with real ES at N = 10,000
#                  at iterations 0, 250, 500, 1,000, 2,000                    (~1.3 + ~0.8)
#          first_order  campaigns/first_order.toml (hpc-es campaign run): first-order ES (issue 27,
#                  ours): validation against real ES on the small net
#                  (N = 1,000, sigma 0.002, 300 it., seeds 0-2, both methods: ~1.2), the first-order
#                  twins of section sigma's ES runs (~0.3), Fig. 3 at paper scale (limited,
#                  uniform and size draw, 5 seeds: ~1.7), SGD on tf_tutorial (5 seeds: ~0.8)
#                  and Fig. 1 / Fig. 3's full arm (fo_tf_paper, 5 seeds: ~7)
#          report  the tables and figures of whatever is complete (after the runs of the sections named)
# Every run is one MPI rank; $HPC_ES_JOBS of them (default: the number of cores) run at a time.
# Every run resumes if interrupted and is skipped once complete: start the script again.
# Core-hours as measured on the 2-core VM of 2026-11-27 (docs/RESULTS.md), about 25 in all.
set -uo pipefail
home=$(cd "$(dirname "$0")/.." && pwd)
root=${HPC_ES_RUNS:-runs}
ranks=1
max_jobs=${HPC_ES_JOBS:-$(nproc)}
export HPC_ES_THREADS=${HPC_ES_THREADS:-1}
venv=${HPC_ES_VENV:-$home/.venv}  # as jobs/local.sh: the checkout's environment if there is one
if [ -f "$venv/bin/activate" ]; then . "$venv/bin/activate"; fi
. "$home/jobs/_run.sh"
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
spawn() {  # spawn COMMAND...: in the background, at most $max_jobs at a time
  while [ "$(jobs -rp | wc -l)" -ge "$max_jobs" ]; do wait -n || failed=$((failed + 1)); done
  "$@" &
}

TF="--set run.eval_every=50 --set run.log_every=100"
reached() {  # reached RESULTS ITERATION: the run's file is at exactly that iteration
  python -c 'import sys; from hpc_es import io
sys.exit(0 if io.read_results(sys.argv[1])["completed_iterations"] == int(sys.argv[2]) else 1)' "$@" 2> /dev/null
}
layers_tf() {  # the proxy (seed 0) in legs, its theta kept after each; one real-ES iteration at each
  local it self="$root/proxy_self/proxy_tf_paper/results.h5"
  for it in 250 500 1000 2000; do
    if [ -f "$root/proxy_self/theta_$it.h5" ]; then continue; fi
    run proxy_self/proxy_tf_paper proxy_tf_paper $TF --set run.seed=0 --set measure.sgd_self_correlation=true \
      --set run.iterations=$it || return
    if ! reached "$self" $it; then
      echo "== proxy_self: theta_$it.h5 is missing and $self is not at iteration $it (remove $root/proxy_self" \
           "to make the legs again)" >&2
      return 1
    fi
    cp "$self" "$root/proxy_self/theta_$it.h5"
  done
  run layers_tf/it0 corr_tf_paper --set run.iterations=1 --set run.checkpoint_every=0 --set run.eval_every=0 || return
  for it in 250 500 1000 2000; do
    run layers_tf/it$it corr_tf_paper --set run.iterations=1 --set run.checkpoint_every=0 --set run.eval_every=0 \
      --set net.theta_from="$root/proxy_self/theta_$it.h5" || return
  done
}
T1="--set run.iterations=40000 --set run.eval_every=10000 --set run.checkpoint_every=2000 --set run.log_every=5000"
SEEDS5="0 1 2 3 4"
t1=$root/t1_40k/table1_small_local
t1_done() { complete "$t1"/{sgd,proxy_0.04,proxy_0.2}-seed{0,1,2,3,4}; }

LAYERS_ITERATIONS=${LAYERS_ITERATIONS:-1200}  # the rho-9% proxy passes 90% near iteration 900
layers_run() {  # section sigma's (0.002, seed 0) ES run, made again to more iterations in its own directory
  # (the same trajectory over their common 200 iterations; runs are never copied: a copy would share its run id)
  run layers_small/es corr_small_local --set es.sigma=0.002 --set run.seed=0 --set measure.sgd_self_correlation=false \
    --set run.eval_every=10 --set run.iterations=$LAYERS_ITERATIONS
}
if wants layers; then spawn layers_tf; spawn layers_run; fi

for c in paper table1 sigma limited dose first_order; do  # campaigns/$c.toml, after the sections above: each runs $max_jobs at a time
  if wants "$c"; then  # (every run in its own directory: none waits for another section's)
    while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=$((failed + 1)); done
    python -m hpc_es campaign run "$home/campaigns/$c.toml" --root "$root" --jobs "$max_jobs" || failed=$((failed + 1))
  fi
done

while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=$((failed + 1)); done
[ "$failed" = 0 ] || echo "jobs/beyond_local.sh: $failed runs failed (see above); the tables below leave them out" >&2

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
dose_dirs=("$root/dose")
if t1_done; then  # all there: table1 only reads them
  report "Table 1 at 40,000 iterations" python -m hpc_es table1 table1_small_local --runs 5 $T1 --out "$t1"
  [ -e "$root/dose/sgd-seed0" ] || dose_dirs+=("$t1")  # Table 1's arms, unless made at 10,000 already
else
  echo "== Table 1 at 40,000 iterations: not yet (runs missing or incomplete under $t1)"
fi
report "dose-response, small net, at 10,000 iterations" python -m hpc_es dose "${dose_dirs[@]}" \
  --at 10000 "${units[@]}" --out "$figs/dose"
report "limited vs full ES as proxies, tf_tutorial, at 2,000 iterations" python -m hpc_es dose "$root/fig2_tf" "$root/limited_tf" \
  --at 2000 --pair 0.039,0.101 --pair 0.039,0.089 --out "$figs/limited"
report "the proxy against ES at each sigma" python -m hpc_es gap "$root/sigma" --out "$figs/sigma"
report "which layers ES gets right, small net" python -m hpc_es plot "$root/layers_small/es" --layers --out "$figs/layers"
report "docs/REPRODUCTION.md from every run present" write_reproduction
exit "$((failed > 0))"
