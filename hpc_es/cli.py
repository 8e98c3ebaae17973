"""``hpc-es`` command line: train, table1, report, plot, dose, gap, archive, data fetch / verify, plan,
presets.

Heavy modules (numpy, numba kernels) are imported inside the commands, after ``--threads``
has set the thread variables, so the thread count takes effect for BLAS too. Every bad input
(an option, a config value, the data, the run directory, a thread variable) ends in one
line on rank 0 naming the culprit and exit code 2, on every rank alike.
"""
import argparse
import logging
import os
import shlex
import sys
import time


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one line, printed once (rank 0 under a launcher), exit code 2."""

    def error(self, message):
        from hpc_es import comm
        if comm.rank_from_environment() == 0:
            sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        if comm.size_from_environment() > 1:
            comm.world()  # MPI up, so that leave()'s barrier holds every rank until rank 0 has printed
        sys.exit(comm.leave(2))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    from hpc_es import comm, threads
    try:
        threads.check_environment()
        comm.ranks_per_virtual_node()
    except ValueError as err:
        parser.error(str(err))
    if getattr(args, "threads", None) is not None:
        threads.set_threads(args.threads)
        os.environ["HPC_ES_THREADS"] = str(args.threads)
    _setup_logging(args.verbose)
    args.command_line = "hpc-es " + shlex.join(argv)
    from hpc_es.config import ConfigError
    from hpc_es.data import DataError
    from hpc_es.io import RunDirError
    from hpc_es.train import Preempted, PREEMPTED_EXIT_CODE
    from hpc_es.comm import MPIUnavailable, RankFailure
    try:
        return args.func(args) or 0
    except Preempted as err:
        if _rank() == 0:
            logging.getLogger("hpc_es").warning("%s", err)
        return comm.leave(PREEMPTED_EXIT_CODE)
    except (ConfigError, DataError, RunDirError, FloatingPointError) as err:
        # Every rank reaches the same verdict (shared input, a broadcast or an agreement), and
        # the message names the rank where it matters; rank 0 says it once.
        log = logging.getLogger("hpc_es")
        (log.error if _rank() == 0 else log.debug)("%s", err)
        return comm.leave(2)
    except MPIUnavailable as err:  # no MPI to agree through: each process decided alike from its environment
        if comm.rank_from_environment() == 0:
            logging.getLogger("hpc_es").error("%s", err)
        return 2
    except RankFailure as err:  # agreed on by every rank (see docs/RELIABILITY.md): not bad input
        log = logging.getLogger("hpc_es")
        (log.error if _rank() == 0 else log.debug)("%s", err)
        return comm.leave(1)
    except BrokenPipeError:  # e.g. `hpc-es presets | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _rank():
    from hpc_es import comm
    return comm.world().Get_rank()


def _threads(text):
    """--threads: a positive integer, or 0 for one thread per available CPU."""
    text = text.strip()
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer, or 0 for one thread per "
                                         f"available CPU")
    return int(text)


def _positive(text):
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return int(text)


def _probability(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a p-value in (0, 1]")
    return value


def _parser():
    parser = _Parser(prog="hpc-es", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train with a preset or a TOML config")
    train.add_argument("config", help="preset name (see `hpc-es presets`) or path to a .toml file")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting, e.g. --set run.iterations=100 (repeatable)")
    train.add_argument("--out", help="run directory for results.h5 and checkpoints "
                       "(default: runs/<config>-<date>-<time>)")
    train.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                       help="continue the run in --out from its last checkpoint; --resume auto: continue if "
                       "there is a checkpoint, else start (job scripts)")
    train.add_argument("--force", action="store_true", help="overwrite another run's files in --out")
    train.add_argument("--quiet", action="store_true", help="no progress lines")
    train.add_argument("--data-dir", help="MNIST directory (default: $HPC_ES_DATA, else the user cache)")
    train.add_argument("--threads", type=_threads, help="BLAS and numba threads per process (default 1; "
                       "0: one per CPU available to the rank)")
    train.set_defaults(func=_train)

    table1 = sub.add_parser("table1", help="Table 1: SGD vs ES proxies over several seeds (runs spread over ranks)")
    table1.add_argument("config", help="base preset or .toml (e.g. sgd_small_local)")
    table1.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    table1.add_argument("--rhos", default="0.04,0.2", help="proxy correlations (paper: 0.04,0.2)")
    table1.add_argument("--runs", type=_positive, default=20, help="seeds per method (paper: 20)")
    table1.add_argument("--out", required=True, help="directory for per-run results and table1.json")
    table1.add_argument("--data-dir", help="MNIST directory")
    table1.add_argument("--threads", type=_threads, help="BLAS and numba threads per process (default 1; "
                        "0: one per CPU available to the rank)")
    table1.set_defaults(func=_table1)

    report = sub.add_parser("report", help="markdown table of results files beside the paper's numbers")
    report.add_argument("results", nargs="+", help="results.h5 files and table1.h5 summaries, or directories")
    report.add_argument("--pair", nargs=2, action="append", default=[], metavar=("ES", "PROXY"),
                        help="also compare two runs' validation curves (Fig. 2), repeatable")
    report.set_defaults(func=_report)

    camp = sub.add_parser("campaign", help="run, report on or archive the runs a campaign file plans "
                          "(campaigns/*.toml; resumable: skips what is finished)")
    camp.add_argument("action", choices=["run", "status", "archive"])
    camp.add_argument("file", help="campaign TOML file, e.g. campaigns/first_order.toml")
    camp.add_argument("--root", help="directory of the run directories (default: the file's root)")
    camp.add_argument("--jobs", type=_positive, default=1, help="MPI ranks at a time (run; default 1): a run of R "
                      "ranks takes R")
    camp.add_argument("--to", help="archive into this directory (default: the file's archive)")
    camp.add_argument("--only", action="append", default=[], metavar="GLOB",
                      help="only the runs whose directory matches GLOB (e.g. 'fig4_*'), and the runs they need; "
                           "repeatable")
    camp.set_defaults(func=_campaign)

    fin = sub.add_parser("finished", help="exit 0 when every run directory given holds a finished run (as "
                         "its config with the --set overrides asks), else 1 (for job scripts)")
    fin.add_argument("dirs", nargs="+", metavar="DIR")
    fin.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    fin.set_defaults(func=_finished)

    repro = sub.add_parser("reproduction", help="docs/REPRODUCTION.md from the committed archives: every claim of "
                           "the paper beside ours, how ours was obtained, statistics and a verdict")
    repro.add_argument("archives", nargs="?", default=os.path.join("docs", "runs"),
                       help="directory of archived runs and JSON records (default docs/runs)")
    repro.add_argument("--write", metavar="FILE", help="write the report to FILE (default: print it)")
    repro.set_defaults(func=_reproduction)

    plot = sub.add_parser("plot", help="Figures 1-5 (PNG and PDF) from results files")
    plot.add_argument("results", nargs="+", help="results.h5 files or directories holding them")
    plot.add_argument("--figure", type=int, action="append", choices=[1, 2, 3, 4, 5],
                      help="figure to draw (repeatable; default: every figure some run belongs to)")
    plot.add_argument("--layers", action="store_true", help="per-layer rho, measured against our theory, and "
                      "each layer's share of |g|^2 along each ES run that logged them (instead of Figures 1-5 "
                      "unless --figure is given)")
    plot.add_argument("--out", help="output directory (default: figures/ in the directory that holds all "
                      "the results files)")
    plot.set_defaults(func=_plot)

    dose = sub.add_parser("dose", help="accuracy against rho: SGD and constant-rho ES proxies at one "
                          "iteration, tests against SGD, ES population and core-hours per rho (ours)")
    dose.add_argument("results", nargs="+", help="results.h5 files or directories (e.g. `hpc-es table1 "
                      "--rhos 0.01,0.02,...` output)")
    dose.add_argument("--at", type=_positive, help="validation iteration to compare (default: per net and "
                      "setting, the largest every run of that group reached)")
    dose.add_argument("--units", action="append", help="per-unit costs JSON (benchmarks/out/units.json, `hpc-es "
                      "plan PRESET --save-units FILE`) to add each rho's ES cost on the nets it has costs for; "
                      "repeatable (a later file adds the nets the earlier ones lack); without it, no costs")
    dose.add_argument("--window", type=_positive, default=1, help="read each run as the mean of its K "
                      "validations ending at --at (default 1: that validation alone)")
    dose.add_argument("--paper-p", type=_probability, metavar="P", help="also say how often these run counts would "
                      "give p >= P between the arms compared, under the power model (e.g. 0.75: Fig. 3's)")
    dose.add_argument("--pair", dest="pairs", action="append", type=_rho_pair, metavar="RHO_A,RHO_B",
                      help="also test these two rho arms against each other (repeatable; default: each rho "
                      "against the next smaller)")
    dose.add_argument("--out", help="directory for dose_response_<net>.{png,pdf}, the arms' curves "
                      "dose_curves_<net>.{png,pdf} and dose_response.json "
                      "(default: figures/ beside the results)")
    dose.set_defaults(func=_dose)

    gap = sub.add_parser("gap", help="ES at several sigma beside proxies that follow its measured rho, and "
                         "beside first-order ES on the same populations: where each instrument stops predicting "
                         "ES (ours)")
    gap.add_argument("results", nargs="+", help="results.h5 files or directories: ES runs with "
                     "measure.correlation and proxies with proxy.rho_from naming them; ES runs and first-order "
                     "ES runs of the same config and seed")
    gap.add_argument("--out", help="directory for proxy_gap_<net>.{png,pdf}, proxy_gap.json and "
                     "first_order_gap.json (default: figures/ beside the results)")
    gap.set_defaults(func=_gap)

    archive = sub.add_parser("archive", help="copy results files without their theta (a few hundred KB: what the "
                             "analyses read) into another directory, keeping their layout")
    archive.add_argument("results", nargs="+", help="run directories, folders of runs, or results.h5 files")
    archive.add_argument("--to", required=True, metavar="DIR", help="destination: a folder given is copied "
                         "to DIR/<its name>/..., a results file to DIR/<its run directory's name>/")
    archive.set_defaults(func=_archive)

    data = sub.add_parser("data", help="MNIST files: fetch or verify")
    data_sub = data.add_subparsers(required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download + verify MNIST and write the HDF5 cache")
    fetch.add_argument("--dest", help="target directory (default: $HPC_ES_DATA, else the user cache)")
    fetch.add_argument("--mirror", action="append", help="base URL to try first (repeatable)")
    fetch.set_defaults(func=_fetch)
    verify = data_sub.add_parser("verify", help="load and verify the MNIST files")
    verify.add_argument("--data-dir", help="MNIST directory (default: $HPC_ES_DATA, else the user cache)")
    verify.set_defaults(func=_verify)

    plan = sub.add_parser("plan", help="predict a preset's wall time, core-hours and memory per node on R ranks")
    plan.add_argument("config", help="preset name or .toml")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--ranks", default="100", help="rank counts, comma-separated (default 100)")
    plan.add_argument("--ranks-per-node", type=_positive, default=32, help="ranks per node (default 32)")
    plan.add_argument("--units", help="per-unit costs JSON (from --save-units or benchmarks/scaling.py); "
                      "default: measure them now on one core (about a minute)")
    plan.add_argument("--save-units", metavar="FILE", help="write the measured units to FILE")
    plan.add_argument("--network", help="alpha-beta fit JSON (benchmarks/out/network.json); default: an "
                      "assumed cluster interconnect")
    plan.add_argument("--runs", type=_positive, help="Table 1: seeds per method (default: the job script's, else 20)")
    plan.add_argument("--rhos", default="0.04,0.2", help="Table 1: proxy correlations")
    plan.add_argument("--data-dir", help="MNIST directory (for measuring the units)")
    plan.set_defaults(func=_plan)

    presets = sub.add_parser("presets", help="list bundled presets and every config key")
    presets.set_defaults(func=_presets)

    kind = sub.add_parser("kind", help="what a config is for and the command that runs it, one line for scripts: "
                                       "KIND COMMAND (e.g. `table1 hpc-es table1`; hpc_es.kinds)")
    kind.add_argument("config", help="preset name or .toml")
    kind.set_defaults(func=_kind)
    return parser


def _setup_logging(verbose):
    from hpc_es import comm
    world = comm.world()
    rank, size = world.Get_rank(), world.Get_size()
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING),
        format=f"%(asctime)s [{rank}/{size}] %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)


def _train(args):
    from hpc_es import comm, config, kinds
    world = comm.world()
    comm.check_launch(world)
    cfg = _load_config(args)
    comm.install_excepthook(world)
    out = args.out
    if out is None:
        if args.resume:
            raise config.ConfigError("--resume needs --out DIR (the run directory to continue)")
        stem = os.path.splitext(os.path.basename(args.config))[0]
        out = world.bcast(os.path.join("runs", time.strftime(f"{stem}-%Y%m%d-%H%M%S")), root=0)
    kind = kinds.of(cfg.to_dict())
    theta, history = kinds.resolve(kind.run)(cfg, world, out=out, resume=args.resume, force=args.force,
                                             quiet=args.quiet, command=args.command_line)
    if world.Get_rank() == 0:
        print(kinds.resolve(kind.summary)(cfg, history, out, world.Get_size()))


def _table1(args):
    from hpc_es import comm, experiments, report
    world = comm.world()
    comm.check_launch(world)
    cfg = _load_config(args)
    rhos = _rhos(args.rhos)
    comm.install_excepthook(world)
    summary = experiments.table1(world, cfg, rhos, args.runs, args.out)
    if world.Get_rank() == 0:
        print(report.table1_markdown(summary))


def _rhos(text):
    """--rhos: comma-separated correlations in (0, 1]."""
    from hpc_es import config
    try:
        rhos = [float(r) for r in text.split(",")]
    except ValueError:
        rhos = []
    if not rhos or not all(0 < r <= 1 for r in rhos):
        raise config.ConfigError(f"--rhos {text!r}: expected comma-separated numbers in (0, 1]")
    return rhos


def _rho_pair(text):
    """--pair: two correlations "RHO_A,RHO_B"."""
    rhos = _rhos(text)
    if len(rhos) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two correlations RHO_A,RHO_B")
    return tuple(rhos)


def _plot(args):
    from hpc_es import plots, runs as runs_mod
    runs = runs_mod.load_runs(args.results)
    if not runs:
        raise _usage_error(f"no results.h5 under {' '.join(args.results)}")
    out = args.out or plots.default_out_dir([r.path for r in runs])
    if args.layers:
        layered = [r for r in runs if any(k.startswith("rho_theory_") for k in r.history)]
        if not layered:
            raise _usage_error(f"--layers: no run under {' '.join(args.results)} logged per-layer rho and its "
                               f"theory (an ES run with measure.correlation = true)")
        for r in layered:
            print("wrote " + ", ".join(plots.layers(r, out)))
        if not args.figure:
            return
    wanted = args.figure or sorted(plots.FIGURES)
    for n in wanted:
        try:
            print("wrote " + ", ".join(plots.draw(runs, n, out)))
        except ValueError as err:
            if args.figure:  # asked for by name: an error; otherwise: say which were left out
                raise _usage_error(str(err)) from None
            print(f"skipped: {err}")
            continue
        absent = plots.missing(runs, n)
        if absent:
            print(f"  figure {n} compares, but no run given is: {', '.join(absent)}")


def _usage_error(message):
    from hpc_es.io import RunDirError
    return RunDirError(message)


def _campaign(args):
    from hpc_es import campaign
    plan = campaign.only(campaign.load(args.file, args.root), args.only)
    if args.action == "status":
        print("\n".join(campaign.status(plan)))
    elif args.action == "archive":
        print(f"{campaign.archive(plan, args.to)} runs archived into {args.to or plan.archive}")
    else:
        failed = campaign.run(plan, args.jobs, say=lambda line: print(line, flush=True))
        print("\n".join(campaign.status(plan)[-1:]))
        return 1 if failed else 0


def _finished(args):
    from hpc_es import campaign, io
    for out in args.dirs:
        if os.path.exists(os.path.join(out, io.LOCK)) and io.lock_holder(out):
            return 1  # another process is still at it
        if not campaign.finished(out, args.overrides)[0]:
            return 1
    return 0


def _reproduction(args):
    from hpc_es import io, reproduction
    if not os.path.isdir(args.archives):
        raise io.RunDirError(f"{args.archives}: no such directory of archived runs (expected e.g. docs/runs)")
    text = reproduction.generate(args.archives)
    if not args.write:
        print(text, end="")
        return
    io.atomic_write(args.write, lambda tmp: open(tmp, "w").write(text))
    print(f"wrote {args.write}")


def _report(args):
    from hpc_es import io, report
    runs, tables = [], []
    for path in args.results:
        if os.path.isdir(path):
            from hpc_es.runs import find_results
            runs += find_results([path])
            tables += find_results([path], io.TABLE1)
            continue
        (tables if path.endswith(io.TABLE1) else runs).append(path)
    if runs:
        print(report.report(runs))
    for path in tables:
        print("\n" + report.table1_markdown(io.read_summary(path)[1]))
    for a, b in args.pair:
        c = report.paired_curves(a, b)
        print(f"\nvalidation curves of {a} and {b} at {c['points']} common points: correlation "
              f"{c['curve_correlation']:.4f}, of their changes {c['change_correlation']:.4f}, "
              f"mean |difference| {100 * c['mean_abs_difference']:.2f} points")


def _dose(args):
    from hpc_es import config, dose, plots, runs as runs_mod
    units = _merged_units(args.units) if args.units else None
    if units is not None and not set(units) & set(dose.COST_NETS):
        raise config.ConfigError(f"--units {', '.join(args.units)}: per-unit costs for none of the nets "
                                 f"{', '.join(dose.COST_NETS)}")
    runs = runs_mod.load_runs(args.results)
    try:
        selected, skipped = dose.select(runs, args.at)
    except ValueError as err:
        raise config.ConfigError(f"hpc-es dose {' '.join(args.results)}: {err}") from None
    groups = dose.collect(selected, args.window)
    summaries = {key: {**dose.summarize(arms, pairs=args.pairs, paper_p=args.paper_p), "window": args.window}
                 for key, (_, arms) in sorted(groups.items())
                 if "sgd" in arms or len(arms) > 1}  # without SGD: its rho arms against each other
    for net, departures in sorted(set(groups) - set(summaries)):
        print(f"(left out: the proxy runs on {net}{''.join(', ' + d for d in departures)} are one rho arm "
              f"with no SGD runs trained alike to compare with)")
    read = f"iteration {args.at:,}" if args.at else "the last iteration their group shares"
    if not summaries:
        raise config.ConfigError(f"hpc-es dose: no SGD runs or second rho arm trained alike beside the proxies "
                                 f"validated at {read} ({skipped} runs without a validation there)")
    out = args.out or plots.default_out_dir([r.path for r in runs])
    record = []
    curves = dose.curves(selected)
    for key, summary in summaries.items():
        at = groups[key][0]
        print(dose.markdown(key, at, summary, units) + "\n")
        paths = plots.dose_response(key, at, summary, out) + plots.dose_curves(key, at, curves[key], out)
        print("figure: " + ", ".join(paths))
        record.append({"net": key[0], "departures": list(key[1]), "iteration": at, **summary})
    if skipped:
        print(f"({skipped} SGD or proxy runs have no validation at {read} and were left out)")
    _write_json(os.path.join(out, "dose_response.json"), record)


def _gap(args):
    from hpc_es import config, plots, proxy_gap, runs as runs_mod
    runs = runs_mod.load_runs(args.results)
    found, orphans = proxy_gap.pairs(runs)
    first, lone = proxy_gap.twins(runs)
    if not found and not first:
        unmatched = orphans + lone
        raise config.ConfigError(f"hpc-es gap {' '.join(args.results)}: no proxy run with proxy.rho_from naming an "
                                 f"ES run given here (same seed), and no first-order ES run beside a real ES run of "
                                 f"the same config and seed" + (f"; unmatched: {', '.join(unmatched)}" if unmatched else ""))
    out = args.out or plots.default_out_dir([r.path for r in runs])
    summaries = {key: proxy_gap.summarize(by_seed) for key, by_seed in found.items()}
    twins = {key: proxy_gap.summarize(by_seed, "first_order") for key, by_seed in first.items()}
    if found:
        print(proxy_gap.markdown(summaries))
        if orphans:
            print(f"\n(proxies whose ES run was not given, left out: {', '.join(orphans)})")
        record = [{"net": k[0], "sigma": k[1], **s} for k, s in summaries.items() if s]
        _write_json(os.path.join(out, "proxy_gap.json"), record)
    if first:
        print("\nFirst-order ES beside real ES (same config, seed and population; ours):\n")
        print(proxy_gap.markdown_first_order(twins))
        if lone:
            print(f"\n(first-order runs whose real ES twin was not given, left out: {', '.join(lone)})")
        record = [{"net": k[0], "n_offspring": k[1], "sigma": k[2], **s} for k, s in twins.items() if s]
        _write_json(os.path.join(out, "first_order_gap.json"), record)
    print("figure: " + ", ".join(plots.proxy_gap(summaries, out, first_order=twins)))


def _archive(args):
    from hpc_es import io, runs as runs_mod
    copies = []  # (source, destination run directory); a damaged source stops the command, naming it
    for path in args.results:
        # a folder keeps its own name below --to; a results file, its run directory's name
        top = os.path.dirname(os.path.abspath(path.rstrip(os.sep)))
        top = os.path.dirname(top) if os.path.isfile(path) else top
        found = runs_mod.find_results([path])
        if not found:
            raise io.RunDirError(f"hpc-es archive: {path}: no {io.RESULTS} under it")
        copies += [(f, os.path.join(args.to, os.path.relpath(os.path.dirname(os.path.abspath(f)), top)))
                   for f in found]
    onto = [src for src, out in copies if os.path.realpath(out) == os.path.realpath(os.path.dirname(src))]
    if onto:
        raise io.RunDirError(f"hpc-es archive: {onto[0]} would be archived onto itself (--to {args.to})")
    total = 0
    for src, out in copies:
        os.makedirs(out, exist_ok=True)
        total += io.archive_results(src, out)
    print(f"archived {len(copies)} results file{'s' if len(copies) != 1 else ''} without theta into {args.to} "
          f"({total / 1024:,.0f} KiB)")


def _read_units_file(path):
    """A units JSON (--units) as read, its per-unit costs under "units", or a ConfigError naming the file."""
    import json

    from hpc_es import config
    try:
        with open(path) as f:
            record = json.load(f)
        record["units"]
        return record
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise config.ConfigError(f"--units {path}: cannot be read as a units JSON ({err})") from None


def _read_units(path):
    """The per-unit costs of a units JSON (--units), or a ConfigError naming the file."""
    return _read_units_file(path)["units"]


def _merged_units(paths):
    """The per-unit costs of several units JSONs: each net's from the first file that has it,
    the machine-wide costs from the first file; a ConfigError names a file that cannot be read."""
    merged = {}
    for path in paths:
        for key, value in _read_units(path).items():
            merged.setdefault(key, value)
    return merged


def _write_json(path, record):
    """``record`` as indented JSON at ``path``, atomically; prints where."""
    import json

    from hpc_es import io
    text = json.dumps(record, indent=1)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    io.atomic_write(path, write)
    print(f"wrote {path}")


def _fetch(args):
    from hpc_es import data
    mirrors = tuple(args.mirror or ()) + data.MIRRORS
    path = data.fetch(args.dest, mirrors=mirrors)
    print(f"MNIST verified; HDF5 cache at {path}")


def _verify(args):
    from hpc_es import data
    ds = data.load_mnist(args.data_dir, download=False)
    print(f"MNIST verified from {ds.source}: {len(ds.train_labels)} train, {len(ds.test_labels)} test images")


def _plan(args):
    import json

    from hpc_es import config, costs, data, kinds
    cfg = _load_config(args)
    try:
        ranks = [int(r) for r in args.ranks.split(",")]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 1:
        raise config.ConfigError(f"--ranks {args.ranks!r}: expected positive integers, comma-separated")
    name = os.path.splitext(os.path.basename(args.config))[0]
    script, header = costs.job_script(name)
    table1 = kinds.of(cfg.to_dict()).arms  # priced as all its arms x runs
    rhos = _rhos(args.rhos) if table1 else []
    runs = args.runs or (header.get("runs") if not table1 else None) or (20 if table1 else 1)
    if args.units:
        units = _read_units(args.units)
        if cfg.net.arch not in units:
            raise config.ConfigError(f"--units {args.units}: has no costs for net.arch = {cfg.net.arch!r}")
    else:
        print("measuring the per-unit costs on one core (about a minute; --save-units FILE keeps them)")
        units = costs.measure_units([cfg], data.load_mnist(args.data_dir or cfg.data.dir or None))
    if args.save_units:
        with open(args.save_units, "w") as f:
            json.dump({"units": units}, f, indent=1)
    network = costs.Network.from_json(args.network) if args.network else costs.Network()
    from hpc_es import runs as runs_mod
    what = "Table 1" if table1 else runs_mod.describe(cfg.to_dict())
    length = kinds.length(cfg.to_dict(), runs)  # a population's iterations are blocks: as many as the target needs
    print(f"{name}: {what} on {cfg.net.arch}, {length} (a projection from per-unit costs measured on this machine)")
    for r in ranks:
        p = costs.predict(cfg, r, units, network, ranks_per_node=args.ranks_per_node, runs=runs, rhos=rhos)
        print()
        print("\n".join("  " + line for line in costs.describe(p, network)))
        if runs > 1 and not table1:
            print(f"  all {runs} runs: {runs * p.core_hours:,.1f} core-hours")
    if script:
        script = os.path.relpath(script)
        print(f"\njob script: sbatch --ntasks=R {script} (its header asks for {header.get('ntasks', '?')} ranks"
              f"{', ' + str(header['runs']) + ' array tasks' if header.get('runs') else ''}); "
              f"several nodes: sbatch --nodes=N --ntasks-per-node=K {script}")
    else:
        print(f"\njob script: jobs/local.sh {name} R  (no Slurm script for this preset)")


def _kind(args):
    from hpc_es import config, kinds
    k = kinds.of(config.load(args.config).to_dict())
    print(k.name, k.command)


def _presets(args):
    from hpc_es import config, kinds, runs
    print("presets (hpc-es train NAME; the first comment lines of hpc_es/presets/NAME.toml say more):")
    for name in config.presets():
        cfg = config.load(name).to_dict()
        net, kind = cfg["net"]["arch"], kinds.of(cfg)
        if kind.arms:
            what = f"Table 1 (run with `{kind.command}`): SGD and ES proxies on {net}, {kinds.length(cfg)}"
        else:
            what = f"{runs.describe(cfg)} on {net}, {kinds.length(cfg)}"
        print(f"  {name:28s} {what}")
    print("\nconfig keys (--set section.key=value), with their defaults (the paper's values):")
    print(config.describe())


def _load_config(args):
    """The config named on the command line with its --set overrides and --data-dir, read by
    rank 0 and broadcast (a file that one node cannot see stops every rank alike)."""
    from hpc_es import comm, config, faults
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.dir={_toml_str(args.data_dir)}")

    def read():
        try:
            faults.point("config_read", 0, 0)
            return config.load(args.config, overrides)
        except OSError as err:
            raise config.ConfigError(f"{args.config}: cannot be read ({err})") from None

    return comm.from_root(comm.world(), read, config.ConfigError)


def _toml_str(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())
