"""Campaigns: a declarative file of runs (run directory -> preset, overrides, seeds), run,
reported on and archived by ``hpc-es campaign run|status|archive FILE``.

A campaign file (TOML, see campaigns/)::

    name = "first_order"
    root = "runs"                # run directories live under it (--root overrides)
    archive = "docs/runs"        # where `archive` copies finished runs, without theta

    [[runs]]
    dir = "first_order/check/{method}_seed{seed}"
    preset = "corr_small_local"
    set = ["run.method={method}", "run.seed={seed}", "run.iterations=300"]
    needs = []                   # run directories that must be finished first ({root} allowed)
    [runs.grid]                  # one run per combination, in this order
    seed = [0, 1, 2]
    method = ["es", "es_first_order"]

Every run is trained with ``--resume auto`` into its directory, so ``run`` after an
interruption continues where each run stopped, skips what is finished (as the run's own
overrides ask: a raised ``run.iterations`` continues it) and leaves alone a directory another
process holds. Runs are continued in place or started from a named theta, never copied. Every
problem of the file is found before any run starts, naming the file, the entry and the key.
"""
import fnmatch
import itertools
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, replace

from hpc_es import config, io, runs as runs_mod

KEYS = {"dir", "preset", "set", "needs", "grid", "ranks"}


class CampaignError(config.ConfigError):
    """A campaign file that cannot be run as written."""


@dataclass(frozen=True)
class Planned:
    dir: str            # relative to the campaign's root
    preset: str
    overrides: tuple
    needs: tuple = ()   # directories (relative to the root) that must be finished first
    ranks: int = 1


@dataclass(frozen=True)
class Campaign:
    path: str
    name: str
    root: str
    archive: str
    runs: tuple


def load(path, root=None):
    """The :class:`Campaign` of the TOML file ``path`` (``root`` overrides the file's), every run's
    config checked (:func:`hpc_es.config.load` with its overrides): :class:`CampaignError` names
    the file, the entry and what is wrong."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CampaignError(f"{path}: cannot be read as a campaign file ({err})") from None
    unknown = set(raw) - {"name", "root", "archive", "runs", "description"}
    if unknown or not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise CampaignError(f"{path}: expected keys name, root, archive and [[runs]] entries"
                            + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    root = root or raw.get("root", "runs")
    planned = [p for i, entry in enumerate(raw["runs"]) for p in _expand(path, i, entry, root)]
    dirs = [p.dir for p in planned]
    dup = sorted({d for d in dirs if dirs.count(d) > 1})
    if dup:
        raise CampaignError(f"{path}: run directory {dup[0]} is planned twice")
    for p in planned:
        missing = [n for n in p.needs if n not in dirs]
        if missing:
            raise CampaignError(f"{path}: {p.dir} needs {missing[0]}, which the campaign does not plan")
    return Campaign(path, raw.get("name", os.path.splitext(os.path.basename(path))[0]), root,
                    raw.get("archive", os.path.join("docs", "runs")), tuple(planned))


def only(campaign, patterns):
    """``campaign`` cut to the runs whose directory matches one of the glob ``patterns`` (e.g.
    ``fig4_*``), with every run they need; :class:`CampaignError` when a pattern matches none."""
    if not patterns:
        return campaign
    keep = set()
    for pattern in patterns:
        hits = {p.dir for p in campaign.runs if fnmatch.fnmatchcase(p.dir, pattern)}
        if not hits:
            raise CampaignError(f"{campaign.path}: --only {pattern!r} matches no run directory of the campaign")
        keep |= hits
    needs = {p.dir: p.needs for p in campaign.runs}
    todo = list(keep)
    while todo:
        for n in needs[todo.pop()]:
            if n not in keep:
                keep.add(n)
                todo.append(n)
    return replace(campaign, runs=tuple(p for p in campaign.runs if p.dir in keep))


def _expand(path, index, entry, root):
    """The runs of one [[runs]] entry: its grid's combinations with the placeholders filled."""
    where = f"{path}: runs entry {index + 1}"
    if not isinstance(entry, dict) or set(entry) - KEYS or not {"dir", "preset"} <= set(entry):
        raise CampaignError(f"{where}: expected keys dir and preset (and set, needs, grid, ranks); got "
                            f"{sorted(entry) if isinstance(entry, dict) else entry!r}")
    grid = entry.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise CampaignError(f"{where}: grid must map names to non-empty lists, got {grid!r}")
    out = []
    for values in itertools.product(*grid.values()):
        names = dict(zip(grid, values), root=root)
        try:
            fill = [str(entry["dir"]).format(**names), str(entry["preset"]).format(**names)]
            sets = tuple(str(s).format(**names) for s in entry.get("set", []))
            needs = tuple(str(n).format(**names) for n in entry.get("needs", []))
        except (KeyError, IndexError, ValueError) as err:
            raise CampaignError(f"{where}: placeholder {err} is not in its grid ({', '.join(grid) or 'none'})") from None
        try:
            config.load(fill[1], list(sets))
        except config.ConfigError as err:
            raise CampaignError(f"{where} ({fill[0]}): {err}") from None
        ranks = entry.get("ranks", 1)
        if not isinstance(ranks, int) or ranks < 1:
            raise CampaignError(f"{where}: ranks = {ranks!r}, expected a positive integer")
        out.append(Planned(fill[0], fill[1], sets, needs, ranks))
    return out


def state(campaign, planned):
    """(word, detail) of one planned run: ("done", ...), ("partial", "I of N iterations"),
    ("busy", who holds it), ("missing", "")."""
    out = os.path.join(campaign.root, planned.dir)
    results = os.path.join(out, io.RESULTS)
    if os.path.exists(os.path.join(out, io.LOCK)) and io.lock_holder(out):
        return "busy", io.lock_holder(out)
    if not os.path.exists(results):
        return ("partial", "checkpoint only") if os.path.exists(os.path.join(out, io.CHECKPOINT)) else ("missing", "")
    done, cfg = finished(out, planned.overrides)
    if done:
        return "done", f"{cfg['completed']:,} iterations"
    return "partial", f"{cfg['completed']:,} of {cfg['run']['iterations']:,} iterations"


def finished(out, overrides=()):
    """(whether the run in directory ``out`` has done what its config with ``overrides`` applied
    asks, that config with its iterations done as "completed"); (False, None) without results."""
    path = os.path.join(out, io.RESULTS)
    if not os.path.exists(path):
        return False, None
    res = io.read_results(path)
    cfg = config.apply_overrides(res["config"], list(overrides))
    done = res.get("completed_iterations", -1)
    return runs_mod.finished(cfg, res["history"], done), {**cfg, "completed": done}


def status(campaign):
    """Lines: one per run with its state, and the counts."""
    states = [(p, *state(campaign, p)) for p in campaign.runs]
    lines = [f"{p.dir}: {word}{' (' + detail + ')' if detail else ''}" for p, word, detail in states]
    counts = {w: sum(1 for _, x, _ in states if x == w) for w in ("done", "partial", "busy", "missing")}
    lines.append(f"{campaign.name}: " + ", ".join(f"{n} {w}" for w, n in counts.items() if n) +
                 f" of {len(states)} runs under {campaign.root}")
    return lines


def command(campaign, planned):
    """The argv that trains ``planned`` (through :mod:`hpc_es.launchers`, as the job scripts do; the
    launcher named by ``$MPIEXEC`` if set, else ``mpiexec``)."""
    sets = [a for o in planned.overrides for a in ("--set", o)]
    launcher = ["--mpiexec", os.environ["MPIEXEC"]] if os.environ.get("MPIEXEC") else []  # as the job scripts
    return [sys.executable, "-m", "hpc_es.launchers", *launcher, "-n", str(planned.ranks), sys.executable, "-m", "mpi4py",
            "-m", "hpc_es", "train", planned.preset, "--out", os.path.join(campaign.root, planned.dir), "--quiet",
            "--resume", "auto", *sets]


def run(campaign, jobs=1, say=print, launch=subprocess.Popen):
    """Train every run that is not finished, ``jobs`` MPI ranks at a time (a run of R ranks takes R;
    one wider than ``jobs`` runs alone), each once its ``needs`` are finished; a run another process holds is left to it. SIGTERM or SIGINT is passed on to the
    runs (each writes a checkpoint and stops), then this returns. Returns the number of runs
    that failed or could not start because one they need failed."""
    todo, running, failed, stop = list(campaign.runs), {}, set(), []
    previous = {s: signal.signal(s, lambda *_: stop.append(1)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while todo or running:
            if stop and todo:
                for proc, _, _ in running.values():
                    proc.send_signal(signal.SIGTERM)
                todo = []
            for p in list(todo):
                busy = sum(ranks for _, _, ranks in running.values())
                if busy and busy + p.ranks > jobs:  # a run wider than ``jobs`` runs alone
                    break
                action, text = _next(campaign, p, failed)
                if action == "wait":
                    continue
                todo.remove(p)
                say(f"== {p.dir}: {text}")
                if action == "failed":
                    failed.add(p.dir)
                elif action == "start":
                    running[p.dir] = (launch(command(campaign, p)), time.monotonic(), p.ranks)
            failed |= _reap(running, say)
            if todo or running:
                time.sleep(0.5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return len(failed)


def _next(campaign, planned, failed):
    """What to do with a run not yet started: ("start", its command in words), ("skip", why),
    ("failed", why: a run it needs failed) or ("wait", ""): a run it needs is not finished yet."""
    if set(planned.needs) & failed:
        return "failed", "not started (a run it needs failed)"
    word, detail = state(campaign, planned)
    if word in ("done", "busy"):
        return "skip", f"{word} ({detail})"
    by_dir = {q.dir: q for q in campaign.runs}
    if any(state(campaign, by_dir[n])[0] != "done" for n in planned.needs):
        return "wait", ""
    return "start", f"{planned.preset} {' '.join(planned.overrides)}".strip()


def _reap(running, say):
    """Remove finished processes from ``running``; the directories of those that failed."""
    failed = set()
    for name, (proc, start, _) in list(running.items()):
        if proc.poll() is None:
            continue
        del running[name]
        if proc.returncode:
            failed.add(name)
            say(f"== {name}: failed (exit {proc.returncode}) after {time.monotonic() - start:.0f} s")
        else:
            say(f"== {name}: {time.monotonic() - start:.0f} s")
    return failed


def archive(campaign, to=None, say=print):
    """Copy every finished run into ``to`` (default the campaign's archive directory) without its
    theta (:func:`hpc_es.io.archive_results`), in the same layout; a run whose archive there is
    already as far along is skipped. Returns the number archived."""
    to, count = to or campaign.archive, 0
    for p in campaign.runs:
        if state(campaign, p)[0] != "done":
            continue
        src, dst = os.path.join(campaign.root, p.dir, io.RESULTS), os.path.join(to, p.dir)
        kept = os.path.join(dst, io.RESULTS)
        if os.path.exists(kept) and io.run_id_of(kept) == io.run_id_of(src) and \
                io.results_attr(kept, "completed_iterations") == io.results_attr(src, "completed_iterations"):
            continue
        size = io.archive_results(src, dst)
        count += 1
        say(f"{p.dir}: {size / 1e6:.2f} MB")
    return count
