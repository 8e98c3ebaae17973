"""Fault injection for the reliability tests: named points where a test can make a rank die.

Production code calls :func:`point` at the places where a real failure would hurt most (the
middle of an evaluation, between writing a checkpoint and renaming it into place, during the
results flush) and where one rank of a cluster job may fail while the others do not (reading
the config or the checkpoint, loading MNIST on a node that cannot see it, allocating the
node's noise table). Nothing happens unless ``HPC_ES_FAULT`` is set, as

    HPC_ES_FAULT=NAME@ITERATION[:RANK][:ACTION]

NAME is a point below, ITERATION the 1-based iteration under way (evaluate) or being saved
(the writes), 0 for the start-up points; RANK the world rank it fires on (default 0) and ACTION
one of ``kill`` (SIGKILL to this process: a node failure or ``kill -9``; the default),
``raise`` (a RuntimeError: a bug on one rank), ``bitflip`` (one bit of the array the point
guards flipped, here theta: a memory error on one node that raises nothing), ``enospc`` (OSError "No space left on
device", as a full disk raises it), ``eio`` (OSError "Input/output error": a file system
failing on one node) or ``nomem`` (MemoryError: a node out of memory). Points:

  config_read        start-up: reading the config (rank 0 reads it for everyone)
  checkpoint_read    start-up, --resume: reading the checkpoint (rank 0 reads it for everyone)
  data_load          start-up: loading MNIST (rank 0 first, then every other rank)
  table_alloc        start-up: the node's shared noise table allocated, not yet filled
  evaluate           after this rank evaluated half of its offspring
  checkpoint_write   checkpoint data written to its temporary file, not yet renamed
  checkpoint_rename  between the two renames of a checkpoint save
  results_write      results data written to its temporary file, not yet renamed
  theta_update       after this rank's optimizer step (``bitflip``: theta's copy on this rank drifts)
"""
import errno
import os
import signal

POINTS = ("config_read", "checkpoint_read", "data_load", "table_alloc", "evaluate", "checkpoint_write",
          "checkpoint_rename", "results_write", "theta_update")
ACTIONS = ("kill", "raise", "enospc", "eio", "nomem", "bitflip")
_spec = None


def _parse():
    text = os.environ.get("HPC_ES_FAULT", "")
    if not text:
        return ()
    try:
        where, *rest = text.split(":")
        name, iteration = where.split("@")
        rank = int(rest[0]) if rest and rest[0] else 0
        action = rest[1] if len(rest) > 1 else "kill"
        spec = (name, int(iteration), rank, action)
    except ValueError:
        spec = None
    if spec is None or spec[0] not in POINTS or spec[3] not in ACTIONS:
        raise ValueError(f"HPC_ES_FAULT={text!r}: expected NAME@ITERATION[:RANK][:ACTION] with NAME in "
                         f"{POINTS} and ACTION in {ACTIONS}")
    return spec


def armed():
    """True if ``HPC_ES_FAULT`` names a fault (checked once per process)."""
    global _spec
    if _spec is None:
        _spec = _parse()
    return bool(_spec)


def point(name, iteration, rank=0, array=None):
    """Fire the configured fault if it names this point, iteration and rank; else do nothing.
    ``bitflip`` flips the lowest bit of ``array``'s middle element (the smallest change a float
    can take: nothing but a digest would notice it)."""
    global _spec
    if _spec is None:
        _spec = _parse()
    if not _spec or _spec[:3] != (name, iteration, rank):
        return
    action = _spec[3]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "bitflip":
        if array is None:
            raise ValueError(f"HPC_ES_FAULT: {name} guards no array to flip a bit of")
        words = array.reshape(-1).view("u1")
        words[(array.size // 2) * array.itemsize] ^= 1
        return
    where = f"injected at {name}, iteration {iteration}, rank {rank}"
    if action == "raise":
        raise RuntimeError(f"injected fault at {name}, iteration {iteration}, rank {rank}")
    if action == "nomem":
        raise MemoryError(f"out of memory ({where})")
    if action == "eio":
        raise OSError(errno.EIO, f"Input/output error ({where})")
    raise OSError(errno.ENOSPC, f"No space left on device ({where})")
