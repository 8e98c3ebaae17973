"""What a config is for, in one place: the kinds of experiment and what each needs elsewhere.

A config is one of:

* ``training``: one run of ``hpc-es train`` (SGD, ES, first-order ES, the proxy); one iteration
  is one update of theta; finished at ``run.iterations``;
* ``population``: ``run.method = "population"``, the pseudo-offspring a target rho needs at a
  fixed theta (:func:`hpc_es.experiments.population`); one iteration is one block of
  ``population.step`` offspring; finished at the target or the cap;
* ``table1``: ``run.experiment = "table1"``, the base config of ``hpc-es table1`` (SGD and a
  proxy per rho, seeds spread over the ranks); each arm is a training run.

:func:`of` says which; the command line, the cost model and the run catalogue ask it instead of
recognising a kind by a preset's name or a method's value. Pure: no MPI, no I/O.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    unit: str          # what one of its iterations is, in words
    command: str       # the command that runs it
    run: str           # "module:function" that `hpc-es train CONFIG` calls (collective; :func:`resolve` imports
    #                    it): a Table 1 config trains as one arm, its base config; `hpc-es table1` runs them all
    price: str         # "module:function" that predicts its cost (:func:`hpc_es.costs.predict` calls it)
    summary: str       # "module:function" (cfg, history, out, ranks) -> the line `hpc-es train` prints at the end
    stopped: str       # "module:function" (cfg, history, start) -> why a finished run has nothing to do
    arms: bool = False  # a base config of several arms (one per --rhos value, and SGD) x --runs seeds


_TRAIN = dict(summary="hpc_es.train:summary", stopped="hpc_es.train:stopped")
KINDS = {
    "training": Kind("training", "iteration", "hpc-es train", "hpc_es.train:run", "hpc_es.costs:price_training",
                     **_TRAIN),
    "population": Kind("population", "block", "hpc-es train", "hpc_es.experiments:population",
                       "hpc_es.costs:price_population", "hpc_es.experiments:population_summary",
                       "hpc_es.experiments:population_stopped"),
    "table1": Kind("table1", "iteration", "hpc-es table1", "hpc_es.train:run", "hpc_es.costs:price_table1",
                   **_TRAIN, arms=True),
}


def length(cfg, runs=1):
    """How long a run of config dict ``cfg`` is, in words (``hpc-es plan``, ``hpc-es presets``):
    a population's blocks up to its target, else its iterations (and ``runs`` runs)."""
    if of(cfg).name == "population":
        pc = cfg["population"]
        return (f"blocks of {pc['step']:,} pseudo-offspring up to rho = {100 * pc['target_rho']:g}% "
                f"(at most {pc['max_offspring']:,})")
    return f"{cfg['run']['iterations']:,} iterations per run" + (f", {runs} runs" if runs > 1 else "")


def resolve(name):
    """The function a kind names as ``"module:function"`` (imported here, on use: this module
    imports nothing of the package, so every layer may ask it)."""
    import importlib
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def of(cfg):
    """The :class:`Kind` of a config dict (files of earlier versions lack ``run.experiment``)."""
    if cfg["run"]["method"] == "population":
        return KINDS["population"]
    return KINDS[cfg["run"].get("experiment", "training")]


def finished(cfg, history, completed):
    """Whether a run with config dict ``cfg``, ``history`` and ``completed`` iterations (-1: not
    recorded) has done all it was asked: a population at its target or at the cap its config
    names (a resume may raise either: the run is then unfinished again); anything else at
    ``run.iterations``."""
    if completed < 0:
        return True
    if of(cfg).name == "population":
        rho, n, pop = history.get("population_rho", []), history.get("population_n", []), cfg["population"]
        return len(n) > 0 and (rho[-1] >= pop["target_rho"] or n[-1] >= pop["max_offspring"])
    return completed >= cfg["run"]["iterations"]
