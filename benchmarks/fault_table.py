"""Markdown tables of tests/test_faults.py's records: the kill loop (HPC_ES_FAULT_REPORT=FILE)
and the one-rank faults (HPC_ES_RANK_FAULT_REPORT=FILE, one file per rank count).

    HPC_ES_FAULT_REPORT=benchmarks/out/faults.json python -m pytest tests/test_faults.py -k kill
    python benchmarks/fault_table.py benchmarks/out/faults.json
    HPC_ES_RANK_FAULT_REPORT=benchmarks/out/rank_faults.json python -m pytest tests/test_faults.py -k one_rank
    python benchmarks/fault_table.py benchmarks/out/rank_faults-n2.json benchmarks/out/rank_faults-n3.json
"""
import json
import re
import sys


def main(*paths):
    records = []
    for path in paths:
        with open(path) as f:
            records.append(json.load(f))
    if "faults" in records[0]:
        return rank_faults(records)
    record = records[0]
    every, n_iter = record["checkpoint_every"], record["iterations"]
    print(f"{len(record['kills'])} kills of a {n_iter}-iteration `mpiexec -n 2` run checkpointing every {every} "
          f"iterations (uninterrupted: {record['reference_seconds']:.1f} s).\n")
    print("| # | kill point | exit code | resumed from iteration | recovery | recovery wall s | final theta |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, k in enumerate(record["kills"], 1):
        print(f"| {n} | {k['where']} | {k['exit_code']} | {k['checkpoint_kept']} | `{k['recovery']}` | "
              f"{k['recovery_seconds']:.2f} | {'bit-identical' if k['bit_exact'] else 'DIFFERS'} |")


def rank_faults(records):
    print("| fault (HPC_ES_FAULT) | ranks | exit code | seconds to exit | checkpoint kept | the one message (rank 0) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for record in records:
        for f in record["faults"]:
            text = re.sub(r"/\S*/run\b", "DIR", f["message"].split("] ", 1)[-1])  # the test's temporary directory
            print(f"| `{f['fault']}@..:{f['rank']}:{f['action']}` | {f['ranks']} | {f['exit_code']} | "
                  f"{f['seconds_to_exit']:.1f} | {f['checkpoint_kept'] or 'none'} | {text} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
