"""HDF5 results and checkpoints: the only writer of run files (called on the root rank only).

A run directory holds
  results.h5            the resolved config (JSON attribute), library versions, rank count,
                        per-iteration datasets (loss, reward statistics, phase timings),
                        validation points, and theta at the last iteration written
  checkpoint.h5         theta, optimizer state, next iteration, config, history so far (and an
                        experiment's own state: the population's running sum)
  checkpoint.prev.h5    the checkpoint before that (kept in case the newest is damaged)
  .lock                 while a run uses the directory: JSON with its host, pid, process
                        start time and Slurm job id (see :func:`acquire_lock`)
Every file is written to a temporary name in the same directory, flushed to disk (fsync)
and ``os.replace``d into place, so a crash or a full disk mid-write leaves the previous good
file intact.
"""
import hashlib
import json
import os
import socket
import tempfile
import time

import numpy as np

from hpc_es import faults

SCHEMA = 2  # 2: every file carries the SHA-256 of its datasets
READABLE_SCHEMAS = (1, 2)  # 1: files of earlier versions, read without a digest to check
RESULTS, CHECKPOINT, PREV_CHECKPOINT = "results.h5", "checkpoint.h5", "checkpoint.prev.h5"
TABLE1 = "table1.h5"  # the summary file hpc_es.experiments.table1 writes beside its arms' runs
NEW_CHECKPOINT = CHECKPOINT + ".new"  # complete, but a save was cut between its two renames
RUN_FILES = (RESULTS, CHECKPOINT, NEW_CHECKPOINT, PREV_CHECKPOINT)
LOCK = ".lock"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class RunDirError(Exception):
    """The output directory cannot be used as asked (another run there, nothing to resume, ...)."""


# ---- the lock: one run per directory ------------------------------------------------------
def _process_start(pid):
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None if it is gone
    (no such process, or a zombie nobody reaped: containers often run no init that reaps)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])  # a zombie is gone too
    except (OSError, IndexError, ValueError):
        return None


def _lock_owner():
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid),
            "slurm_job": os.environ.get("SLURM_JOB_ID", ""), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _lock_is_stale(owner):
    """Why a lock's owner is certainly gone (a reason string), or None if it may be alive."""
    if owner.get("slurm_job") and owner["slurm_job"] == os.environ.get("SLURM_JOB_ID"):
        return f"left by an earlier run of this Slurm job {owner['slurm_job']} (requeued)"
    if owner.get("host") != socket.gethostname():
        return None  # cannot see processes on another host
    start = _process_start(owner.get("pid", -1))
    if start is None:
        return f"process {owner.get('pid')} on {owner.get('host')} is gone"
    if owner.get("start") is not None and start != owner["start"]:
        return f"pid {owner.get('pid')} now belongs to another process"
    return None


def lock_holder(out):
    """Who holds ``out``'s lock ("host H, pid P"), or None when there is none or its owner is gone."""
    try:
        with open(os.path.join(out, LOCK)) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return None if _lock_is_stale(owner) else f"host {owner.get('host')}, pid {owner.get('pid')}"


def acquire_lock(out):
    """Claim ``out`` for this process: create ``out/.lock`` atomically. A lock whose owner is
    alive (or on another host, where we cannot tell) is refused with its host and pid; a
    stale one (owner dead, pid reused, or an earlier run of the same requeued Slurm job) is
    taken over. Returns a message about a taken-over lock, or None."""
    path = os.path.join(out, LOCK)
    taken_over = None
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = json.load(f)
            except (OSError, ValueError):
                owner = {}
            stale = _lock_is_stale(owner) if owner else "unreadable lock file"
            if stale is None:
                raise RunDirError(
                    f"{out}: in use by another run (host {owner.get('host')}, pid {owner.get('pid')}, since "
                    f"{owner.get('since')}{', Slurm job ' + owner['slurm_job'] if owner.get('slurm_job') else ''}); "
                    f"if that run is dead, delete {path}") from None
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            taken_over = f"{path}: took over a stale lock ({stale})"
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(_lock_owner(), f)
        return taken_over
    raise RunDirError(f"{path}: could not be created (another run is racing for {out})")


def release_lock(out):
    """Remove ``out/.lock`` if this process owns it."""
    path = os.path.join(out, LOCK)
    try:
        with open(path) as f:
            owner = json.load(f)
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            os.unlink(path)
    except (OSError, ValueError):
        pass


def check_out_dir(out, resume, force):
    """Decide, before any work, whether ``out`` may be used; raise :class:`RunDirError` if not."""
    present = [n for n in RUN_FILES if os.path.exists(os.path.join(out, n))]
    if resume:
        if not any(n in present for n in (CHECKPOINT, NEW_CHECKPOINT, PREV_CHECKPOINT)):
            raise RunDirError(f"{out}: no checkpoint to resume from (looked for {CHECKPOINT}, {NEW_CHECKPOINT}, "
                              f"{PREV_CHECKPOINT})")
    elif present and not force:
        raise RunDirError(f"{out}: holds another run ({', '.join(present)}); pass --resume to continue "
                          f"it or --force to overwrite it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirError(f"{out}: exists and is not a directory")


def remove_stale_temporaries(out):
    """Delete temporary files a killed writer left in ``out`` (call only while holding the lock)."""
    for name in os.listdir(out):
        if name.startswith(".") and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(out, name))
            except FileNotFoundError:
                pass


def has_checkpoint(out):
    """Whether ``out`` holds a checkpoint file (readable or not) that ``--resume`` would try."""
    return any(os.path.exists(os.path.join(out, n)) for n in (CHECKPOINT, NEW_CHECKPOINT, PREV_CHECKPOINT))


def clear_run(out):
    """Remove the run files of a previous run in ``out`` (for --force)."""
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.unlink(path)


def atomic_write(path, write, fault=None):
    """Create ``path`` atomically: ``write(tmp_path)`` writes a temporary file in the same
    directory, which is fsynced and renamed to ``path``, then the directory is fsynced. A
    crash or a full disk leaves the previous ``path`` (if any) intact and no temporary behind
    (stale ones of a killed writer start with a dot and end in .tmp). ``fault``: (point name,
    iteration) for :mod:`faults`, fired just before the rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; output files are shared like any other
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if fault:
            faults.point(*fault)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_h5(path, fill, fault=None):
    """Write a run file (HDF5, schema version and SHA-256 digest) by ``fill(h5file)`` with
    :func:`atomic_write`."""
    import h5py

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            fill(f)
            f.attrs["sha256"] = _digest(_payload(f))

    try:
        atomic_write(path, write, fault)
    except RuntimeError as err:  # h5py reports some failed writes (a full disk at close) so
        raise OSError(getattr(err, "errno", None), f"{path}: {err}") from None


def _digest(arrays):
    """SHA-256 over named arrays (name, dtype, shape, bytes), in name order: stored with every
    checkpoint and results file and checked on load, so flipped bits in the data (which HDF5
    itself does not notice) are caught rather than resumed from."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _payload(f):
    """Every dataset of an open file, by path, for :func:`_digest`."""
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
    return out


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _write_history(group, history, compress=False):
    extra = {"compression": "gzip", "shuffle": True} if compress else {}
    for key, values in history.items():
        group.create_dataset(key, data=np.asarray(values), maxshape=(None,), **extra)


def _read_history(group):
    return {key: list(group[key][()]) for key in group}


def _verify(f):
    if f.attrs.get("schema") == 1:
        return  # written before files carried a digest
    if _digest(_payload(f)) != f.attrs.get("sha256"):
        raise RunDirError("content does not match its SHA-256 (damaged)")


def save_checkpoint(out, iteration, theta, opt_state, config_dict, history, meta=None, state=None):
    """Checkpoint after ``iteration`` completed iterations; keeps the previous one. ``meta``:
    the run's metadata (start time, ranks, hosts, resumes), kept so a resume can carry it on;
    ``state``: named arrays of an experiment's own state (the population's running sum)."""
    def fill(f):
        f.attrs["kind"] = "checkpoint"
        f.attrs["iteration"] = iteration
        f.attrs["config"] = json.dumps(config_dict)
        if meta is not None:
            f.attrs["meta"] = json.dumps(meta)
        f.create_dataset("theta", data=theta)
        opt = f.create_group("optimizer")
        for key, value in opt_state.items():
            opt.create_dataset(key, data=value)
        _write_history(f.create_group("history"), history)
        extra = f.create_group("state")
        for key, value in (state or {}).items():
            extra.create_dataset(key, data=value)

    path = os.path.join(out, CHECKPOINT)
    tmp_target = path + ".new"
    _atomic_h5(tmp_target, fill, fault=("checkpoint_write", iteration))
    if os.path.exists(path):
        os.replace(path, os.path.join(out, PREV_CHECKPOINT))
    faults.point("checkpoint_rename", iteration)
    os.replace(tmp_target, path)
    _fsync_dir(out)


def load_checkpoint(out):
    """The newest readable checkpoint in ``out`` as a dict; falls back to the previous one."""
    import h5py

    errors, found = [], []
    # checkpoint.h5.new exists only if a save was cut between its two renames; it is complete.
    for name in (CHECKPOINT, NEW_CHECKPOINT, PREV_CHECKPOINT):
        path = os.path.join(out, name)
        if not os.path.exists(path):
            continue
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("schema") not in READABLE_SCHEMAS or f.attrs.get("kind") != "checkpoint":
                    raise RunDirError(f"schema {f.attrs.get('schema')}, expected one of {READABLE_SCHEMAS}")
                _verify(f)
                found.append({
                    "path": path,
                    "iteration": int(f.attrs["iteration"]),
                    "config": json.loads(f.attrs["config"]),
                    "meta": json.loads(f.attrs["meta"]) if "meta" in f.attrs else None,
                    "theta": f["theta"][()],
                    "optimizer": {k: f["optimizer"][k][()] for k in f["optimizer"]},
                    "history": _read_history(f["history"]),
                    "state": {k: f["state"][k][()] for k in f["state"]} if "state" in f else {},
                })
        except (OSError, KeyError, ValueError, RunDirError) as err:
            errors.append(f"{path}: {err}")
    if found:
        return max(found, key=lambda c: c["iteration"])
    raise RunDirError(f"{out}: no readable checkpoint: " + "; ".join(errors or ["none found"]))


def save_results(out, config_dict, meta, history, theta, compress=False):
    """Write ``results.h5``: config and metadata attributes, history datasets (gzip-compressed
    with ``compress``), final theta."""
    def fill(f):
        f.attrs["kind"] = "results"
        f.attrs["config"] = json.dumps(config_dict)
        for key, value in meta.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        _write_history(f.create_group("history"), history, compress)
        f.create_dataset("theta", data=theta)

    _atomic_h5(os.path.join(out, RESULTS), fill, fault=("results_write", meta.get("completed_iterations")))


def save_theta(out, iteration, config_dict, meta, theta):
    """Keep theta after ``iteration`` as ``out/theta_<iteration>.h5`` (``run.keep_theta``): theta with
    the run's config and metadata (its run id), a file ``net.theta_from`` reads."""
    def fill(f):
        f.attrs["kind"] = "theta"
        f.attrs["iteration"] = iteration
        f.attrs["config"] = json.dumps(config_dict)
        for key, value in meta.items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        f.create_dataset("theta", data=theta)

    _atomic_h5(os.path.join(out, f"theta_{iteration}.h5"), fill)


def archive_results(src, out):
    """Copy the results file ``src`` into the run directory ``out`` without its theta: config,
    metadata and the compressed history, which is all the analyses (report, plot, dose, gap,
    a proxy's ``proxy.rho_from``) read; about 0.2 MB for a 2,000-iteration tf_tutorial run instead
    of the 13 MB of its theta, small enough to keep beside the documents they support. The copy
    records the theta's length (``theta_dropped``); :func:`load_theta` refuses it, saying so.
    Returns the bytes written."""
    res = read_results(src)  # checks the digest: a damaged file is not archived
    theta, history, cfg = res.pop("theta"), res.pop("history"), res.pop("config")
    meta = {k: v for k, v in res.items() if k not in ("kind", "schema")}
    meta["theta_dropped"] = int(meta.get("theta_dropped", theta.size))
    save_results(out, cfg, meta, history, np.zeros(0, np.float32), compress=True)
    return os.path.getsize(os.path.join(out, RESULTS))


def add_meta(path, items):
    """Rewrite the results file ``path`` (atomically) with the metadata ``items`` added: e.g. the
    run id of a proxy's ``proxy.rho_from`` for files written before runs recorded it."""
    res = read_results(path)
    theta, history, cfg = res.pop("theta"), res.pop("history"), res.pop("config")
    meta = {k: v for k, v in res.items() if k not in ("kind", "schema")}
    meta.update(items)
    save_results(os.path.dirname(path) or ".", cfg, meta, history, theta, compress="theta_dropped" in meta)


def read_results(path):
    """A results file as a dict (config decoded, history as numpy arrays); a damaged or foreign
    file raises :class:`RunDirError` naming it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("kind") != "results" or f.attrs.get("schema") not in READABLE_SCHEMAS:
                raise RunDirError(f"{path}: not an hpc_es results file of schema {READABLE_SCHEMAS} (kind "
                                  f"{f.attrs.get('kind')!r}, schema {f.attrs.get('schema')!r})")
            _verify(f)
            res = {key: _attr(f.attrs[key]) for key in f.attrs if key != "sha256"}
            res["config"] = json.loads(res["config"]) if isinstance(res["config"], str) else res["config"]
            res["history"] = {k: f["history"][k][()] for k in f["history"]}
            res["theta"] = f["theta"][()]
    except (OSError, KeyError, ValueError, RunDirError) as err:
        raise RunDirError(f"{path}: cannot be read as a results file ({err})") from None
    return res


def run_id(meta, config_dict):
    """A run's identity from its metadata (``meta``: a results file's attributes as
    :func:`read_results` gives them) and config: the ``run_id`` written when the run was created,
    kept across resumes and carried by archives. Files written before run ids existed get one
    derived from their start stamp and config ("legacy-..."), the same for every copy of them;
    None for files that record no start (each such file is a run of its own)."""
    if meta.get("run_id"):
        return str(meta["run_id"])
    if not meta.get("started"):
        return None
    text = str(meta["started"]) + json.dumps(config_dict, sort_keys=True, default=str)
    return "legacy-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def run_id_of(path):
    """:func:`run_id` of the run that wrote the results or checkpoint file ``path`` (None if the
    file records none), from its attributes alone."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = {key: _attr(f.attrs[key]) for key in f.attrs if key != "sha256"}
    except OSError:
        return None
    meta = json.loads(attrs["meta"]) if isinstance(attrs.get("meta"), str) else attrs  # a checkpoint's
    cfg = attrs.get("config", "{}")
    return run_id(meta, json.loads(cfg) if isinstance(cfg, str) else cfg)


def results_attr(path, key, default=None):
    """One metadata attribute of a results file (e.g. its ``started`` stamp) without reading its
    history; ``default`` where the file lacks it or cannot be opened."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return _attr(f.attrs[key]) if key in f.attrs else default
    except OSError:
        return default


def _attr(value):
    """An attribute as written by :func:`save_results`: lists and dicts were stored as JSON."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value.item() if isinstance(value, np.generic) else value


def load_theta(path, n_params):
    """The ``theta`` dataset of a results or checkpoint file, checked against ``n_params``."""
    import h5py

    if not os.path.isfile(path):
        raise RunDirError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            if "theta" not in f:
                raise RunDirError(f"{path}: no 'theta' dataset (expected a results.h5 or checkpoint.h5)")
            if "theta_dropped" in f.attrs:
                raise RunDirError(f"{path}: an archived copy without its theta (`hpc-es archive` keeps the "
                                  f"history only); give the run's own results.h5 or checkpoint.h5")
            if "sha256" in f.attrs:
                _verify(f)
            theta = f["theta"][()]
    except (OSError, KeyError, ValueError) as err:
        raise RunDirError(f"{path}: cannot be read as HDF5 ({err})") from None
    except RunDirError as err:
        text = str(err)
        raise RunDirError(text if text.startswith(str(path)) else f"{path}: {text}") from None
    if theta.shape != (n_params,):
        raise RunDirError(f"{path}: theta has shape {theta.shape}, expected ({n_params},) for this net")
    return theta


def load_rho_schedule(path, iterations):
    """rho(g_ES, g_true) per iteration 1..``iterations`` measured by the ES run of the results file
    ``path`` (float64 array, index t = iteration t + 1), for a proxy that follows it. Every
    problem raises :class:`RunDirError` naming the file and what was expected."""
    if not os.path.isfile(path):
        raise RunDirError(f"proxy.rho_from = {path}: no such file")
    try:
        res = read_results(path)
    except RunDirError as err:
        raise RunDirError(f"proxy.rho_from = {err}") from None
    hist = res["history"]
    if "rho" not in hist or "iteration" not in hist:
        raise RunDirError(f"proxy.rho_from = {path}: no measured rho in its history (expected an ES run made "
                          f"with measure.correlation = true; it was run.method = "
                          f"{res['config'].get('run', {}).get('method')!r})")
    done, rho = np.asarray(hist["iteration"]), np.asarray(hist["rho"], np.float64)
    if len(done) < iterations or not np.array_equal(done[:iterations], np.arange(1, iterations + 1)):
        raise RunDirError(f"proxy.rho_from = {path}: holds rho for iterations 1..{len(done)}, "
                          f"expected 1..{iterations} (run.iterations = {iterations})")
    rho = rho[:iterations]
    bad = np.flatnonzero(~((np.abs(rho) > 0) & (np.abs(rho) <= 1)))  # a negative rho is followed (anti-correlated)
    if bad.size:
        raise RunDirError(f"proxy.rho_from = {path}: iteration {bad[0] + 1} has rho = {rho[bad[0]]:.4g}; "
                          f"a proxy needs 0 < |rho| <= 1 at every iteration")
    return rho


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
