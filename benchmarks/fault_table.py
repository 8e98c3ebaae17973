"""Markdown table of the kill loop's record (tests/test_faults.py with HPC_ES_FAULT_REPORT=FILE).

    HPC_ES_FAULT_REPORT=benchmarks/out/faults.json python -m pytest tests/test_faults.py -k kill
    python benchmarks/fault_table.py benchmarks/out/faults.json
"""
import json
import sys


def main(path):
    with open(path) as f:
        record = json.load(f)
    every, n_iter = record["checkpoint_every"], record["iterations"]
    print(f"{len(record['kills'])} kills of a {n_iter}-iteration `mpiexec -n 2` run checkpointing every {every} "
          f"iterations (uninterrupted: {record['reference_seconds']:.1f} s).\n")
    print("| # | kill point | exit code | resumed from iteration | recovery | recovery wall s | final theta |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, k in enumerate(record["kills"], 1):
        print(f"| {n} | {k['where']} | {k['exit_code']} | {k['checkpoint_kept']} | `{k['recovery']}` | "
              f"{k['recovery_seconds']:.2f} | {'bit-identical' if k['bit_exact'] else 'DIFFERS'} |")


if __name__ == "__main__":
    main(sys.argv[1])
