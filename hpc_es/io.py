"""HDF5 results and checkpoints: the only writer of run files (called on the root rank only).

A run directory holds
  results.h5            the resolved config (JSON attribute), library versions, rank count,
                        per-iteration datasets (loss, reward statistics, phase timings),
                        validation points, and theta at the last iteration written
  checkpoint.h5         theta, optimizer state, next iteration, config, history so far
  checkpoint.prev.h5    the checkpoint before that (kept in case the newest is damaged)
Every file is written to a temporary name in the same directory and ``os.replace``d into
place, so a crash mid-write leaves the previous good file intact.
"""
import json
import os
import tempfile

import numpy as np

SCHEMA = 1
RESULTS, CHECKPOINT, PREV_CHECKPOINT = "results.h5", "checkpoint.h5", "checkpoint.prev.h5"


class RunDirError(Exception):
    """The output directory cannot be used as asked (another run there, nothing to resume, ...)."""


def check_out_dir(out, resume, force):
    """Decide, before any work, whether ``out`` may be used; raise :class:`RunDirError` if not."""
    present = [n for n in (RESULTS, CHECKPOINT, PREV_CHECKPOINT) if os.path.exists(os.path.join(out, n))]
    if resume:
        if not any(n in present for n in (CHECKPOINT, PREV_CHECKPOINT)):
            raise RunDirError(f"{out}: no checkpoint to resume from (looked for {CHECKPOINT}, {PREV_CHECKPOINT})")
    elif present and not force:
        raise RunDirError(f"{out}: holds another run ({', '.join(present)}); pass --resume to continue "
                          f"it or --force to overwrite it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirError(f"{out}: exists and is not a directory")


def clear_run(out):
    """Remove the run files of a previous run in ``out`` (for --force)."""
    for name in (RESULTS, CHECKPOINT, PREV_CHECKPOINT):
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.unlink(path)


def _atomic_h5(path, fill):
    """Write an HDF5 file by ``fill(h5file)`` to a temporary name, then rename it to ``path``."""
    import h5py

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_history(group, history):
    for key, values in history.items():
        group.create_dataset(key, data=np.asarray(values), maxshape=(None,))


def _read_history(group):
    return {key: list(group[key][()]) for key in group}


def save_checkpoint(out, iteration, theta, opt_state, config_dict, history):
    """Checkpoint after ``iteration`` completed iterations; keeps the previous one."""
    def fill(f):
        f.attrs["kind"] = "checkpoint"
        f.attrs["iteration"] = iteration
        f.attrs["config"] = json.dumps(config_dict)
        f.create_dataset("theta", data=theta)
        opt = f.create_group("optimizer")
        for key, value in opt_state.items():
            opt.create_dataset(key, data=value)
        _write_history(f.create_group("history"), history)

    path = os.path.join(out, CHECKPOINT)
    tmp_target = path + ".new"
    _atomic_h5(tmp_target, fill)
    if os.path.exists(path):
        os.replace(path, os.path.join(out, PREV_CHECKPOINT))
    os.replace(tmp_target, path)


def load_checkpoint(out):
    """The newest readable checkpoint in ``out`` as a dict; falls back to the previous one."""
    import h5py

    errors, found = [], []
    # checkpoint.h5.new exists only if a save was cut between its two renames; it is complete.
    for name in (CHECKPOINT, CHECKPOINT + ".new", PREV_CHECKPOINT):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            continue
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("schema") != SCHEMA or f.attrs.get("kind") != "checkpoint":
                    raise RunDirError(f"schema {f.attrs.get('schema')}, expected {SCHEMA}")
                found.append({
                    "path": path,
                    "iteration": int(f.attrs["iteration"]),
                    "config": json.loads(f.attrs["config"]),
                    "theta": f["theta"][()],
                    "optimizer": {k: f["optimizer"][k][()] for k in f["optimizer"]},
                    "history": _read_history(f["history"]),
                })
        except (OSError, KeyError, ValueError, RunDirError) as err:
            errors.append(f"{path}: {err}")
    if found:
        return max(found, key=lambda c: c["iteration"])
    raise RunDirError(f"{out}: no readable checkpoint: " + "; ".join(errors or ["none found"]))


def save_results(out, config_dict, meta, history, theta):
    """Write ``results.h5``: config and metadata attributes, history datasets, final theta."""
    def fill(f):
        f.attrs["kind"] = "results"
        f.attrs["config"] = json.dumps(config_dict)
        for key, value in meta.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        _write_history(f.create_group("history"), history)
        f.create_dataset("theta", data=theta)

    _atomic_h5(os.path.join(out, RESULTS), fill)


def read_results(path):
    """A results file as a dict (config decoded, history as numpy arrays)."""
    import h5py

    with h5py.File(path, "r") as f:
        res = {key: f.attrs[key] for key in f.attrs}
        res["config"] = json.loads(res["config"])
        res["history"] = {k: f["history"][k][()] for k in f["history"]}
        res["theta"] = f["theta"][()]
    return res


def load_theta(path, n_params):
    """The ``theta`` dataset of a results or checkpoint file, checked against ``n_params``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "theta" not in f:
                raise RunDirError(f"{path}: no 'theta' dataset (expected a results.h5 or checkpoint.h5)")
            theta = f["theta"][()]
    except OSError as err:
        raise RunDirError(f"{path}: cannot be read as HDF5 ({err})") from None
    if theta.shape != (n_params,):
        raise RunDirError(f"{path}: theta has shape {theta.shape}, expected ({n_params},) for this net")
    return theta


def save_summary(path, kind, summary, arrays):
    """A multi-run summary (e.g. Table 1): ``summary`` as a JSON attribute, ``arrays`` as datasets."""
    def fill(f):
        f.attrs["kind"] = kind
        f.attrs["summary"] = json.dumps(summary)
        for key, value in arrays.items():
            f.create_dataset(key, data=np.asarray(value))

    _atomic_h5(path, fill)


def read_summary(path):
    """(kind, summary dict) of a file written by :func:`save_summary`."""
    import h5py

    with h5py.File(path, "r") as f:
        return f.attrs["kind"], json.loads(f.attrs["summary"])
