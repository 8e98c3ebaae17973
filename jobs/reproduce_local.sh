#!/usr/bin/env bash
# The paper's experiments at local scale (campaigns/local.toml), then the figures and the reports.
#   jobs/reproduce_local.sh [RANKS]      (cores to use, default 2; results under ${HPC_ES_RUNS:-runs}/local)
# Every run resumes if interrupted and is skipped once complete, so the script can simply be
# started again. Scales are chosen to finish on a 2-core machine in a few hours (1.5 h on our
# 2-core VM on 2026-11-24; about 3.5 h on the same VM on 2026-11-27/28, 3.8 h of run time summed
# over its 40 runs, Table 1's two at a time: shared machines vary); see docs/REPRODUCTION.md for
# what each can and cannot show.
set -euo pipefail
ranks=${1:-2}
root=${HPC_ES_RUNS:-runs}/local
export HPC_ES_THREADS=${HPC_ES_THREADS:-1}

. "$(dirname "$0")/_report.sh"

# the runs: campaigns/local.toml, 2 ranks at a time (a 2-rank run takes both); RANKS is the total
python -m hpc_es campaign run "$(dirname "$0")/../campaigns/local.toml" --root "$root" --jobs "$ranks"
# Table 1's summary (table1.h5) from its runs, all finished by now
if [ ! -f "$root/table1/table1.h5" ]; then
  python -m hpc_es.launchers --mpiexec "${MPIEXEC:-mpiexec}" -n "$ranks" python -m mpi4py -m hpc_es table1 table1_small_local --runs 6 --out "$root/table1"
fi
write_reproduction  # with the paper-scale runs of jobs/beyond_local.sh where they are present
