"""Replicated state that cannot drift: a cheap digest of theta and the optimizer state, and
which ranks disagree.

Every rank holds theta and the optimizer's state and updates them alike (only rewards and
gradient slices travel). A bit flipped in one node's memory, or a node whose libraries round
differently, would make one rank's copy drift without any error, and the run would mix
trajectories. :mod:`hpc_es.train` therefore compares :func:`digest` across the ranks after every
iteration's update, in the one small gather the ranks already make there to agree on a
preemption signal, before any checkpoint is written: every checkpoint on disk is one on which
all ranks agreed. The cost (``benchmarks/drift.py``) is far below 1% of an iteration.

Pure: no MPI, no I/O.
"""
import numpy as np

MASK = 2**64 - 1


def digest(*arrays):
    """tuple of int: per array, the wrapping sum (mod 2**64) of its bytes read as little-endian
    64-bit words, the last partial word as a number of its own. A flip of any one bit changes
    its array's sum by 2**k mod 2**64, never by 0, so a one-bit drift is always seen; any other
    change is missed only if it happens to cancel in the sum. Reads each array once (memory
    bandwidth: about 0.2 ms for the 13 MB of tf_tutorial's theta on our 2-core VM)."""
    sums = []
    for array in arrays:
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        whole = raw.size // 8 * 8
        total = int(np.add.reduce(raw[:whole].view("<u8"), dtype=np.uint64)) if whole else 0
        sums.append((total + int.from_bytes(raw[whole:].tobytes(), "little")) & MASK)
    return tuple(sums)


def state_digest(theta, optimizer_state):
    """:func:`digest` of theta and every array of an optimizer's ``state()`` (in key order)."""
    return digest(theta, *(np.asarray(optimizer_state[key]) for key in sorted(optimizer_state)))


def odd_ranks(digests):
    """(odd, reference): the ranks whose digest differs from the reference group's, and that
    group's ranks; ((), all ranks) when all agree. The reference is the largest group of equal
    digests when one group is larger than every other, else rank 0's group (the copy that is
    checkpointed; with two ranks, which copy drifted cannot be told)."""
    groups = {}
    for rank, value in enumerate(digests):
        groups.setdefault(value, []).append(rank)
    sizes = sorted((len(ranks) for ranks in groups.values()), reverse=True)
    if len(sizes) > 1 and sizes[0] > sizes[1]:
        reference = max(groups.values(), key=len)
    else:
        reference = groups[digests[0]]
    return tuple(r for r in range(len(digests)) if r not in reference), tuple(reference)


def describe(iteration, digests, hosts):
    """One line naming the ranks (and hosts) whose state differs after ``iteration``, or None."""
    odd, reference = odd_ranks(digests)
    if not odd:
        return None

    def names(ranks):
        return ", ".join(f"{r} on {hosts[r]}" for r in ranks)

    tie = "" if len(reference) > len(odd) else (" (no majority: which copy drifted cannot be told; rank 0's is "
                                                "the one checkpointed)")
    return (f"theta and the optimizer state drifted apart after iteration {iteration}: rank{'s' if len(odd) > 1 else ''} "
            f"{names(odd)} differ{'' if len(odd) > 1 else 's'} from rank{'s' if len(reference) > 1 else ''} "
            f"{names(reference)}{tie}")
