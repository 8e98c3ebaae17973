#!/usr/bin/env bash
# The paper's experiments at local scale, one after another, then the figures and the report.
#   jobs/reproduce_local.sh [RANKS]      (default 2; results under ${HPC_ES_RUNS:-runs}/local)
# Every run resumes if interrupted and is skipped once complete, so the script can simply be
# started again. Scales are chosen to finish on a 2-core machine in a few hours (1.5 h on our
# 2-core VM on 2026-11-24; about 3.5 h on the same VM on 2026-11-27/28, 3.8 h of run time summed
# over its 40 runs, Table 1's two at a time: shared machines vary); see docs/REPRODUCTION.md for
# what each can and cannot show.
set -euo pipefail
ranks=${1:-2}
root=${HPC_ES_RUNS:-runs}/local
export HPC_ES_THREADS=${HPC_ES_THREADS:-1}

. "$(dirname "$0")/_run.sh"

for seed in 0 1 2; do
  # Fig. 1 and Fig. 2: ES with gradient correlation, the SGD control and the ES proxy on the same mini-batches
  run fig1_es_seed$seed corr_small_local --set run.seed=$seed
  run fig1_sgd_seed$seed sgd_small_local --set run.seed=$seed --set run.iterations=200 --set run.eval_every=5
  run fig2_proxy_seed$seed proxy_small_local --set run.seed=$seed
  # Fig. 3: limited (2,500 x buckets of <= 500) vs full (500) perturbation
  run fig3_full_seed$seed es_small_local --set run.seed=$seed --set run.eval_every=5
  run fig3_limited_seed$seed limited_small_local --set run.seed=$seed
done
for seed in 0 1; do
  # Fig. 4: no-mini-batch vs mini-batch ES, N = 1,000
  run fig4_nominibatch_seed$seed es_nominibatch_small_local --set run.seed=$seed --set run.eval_every=5
  run fig4_minibatch_seed$seed es_nominibatch_small_local --set run.seed=$seed --set run.eval_every=5 --set es.mode=minibatch
done
# Fig. 5: no-mini-batch ES with L2 2e-4, N = 1,000 and 2,000
run fig5_n1000 es_small99_local --set run.eval_every=5
run fig5_n2000 es_small99_local --set run.eval_every=5 --set es.n_offspring=2000
# Sec. 4: the population for 20% correlation; Table 1
run population population_small_local
if [ ! -f "$root/table1/table1.h5" ]; then
  python -m hpc_es.launchers --mpiexec "${MPIEXEC:-mpiexec}" -n "$ranks" python -m mpi4py -m hpc_es table1 table1_small_local --runs 6 --out "$root/table1"
fi
write_reproduction  # with the paper-scale runs of jobs/beyond_local.sh where they are present
