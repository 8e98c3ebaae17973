"""What a config is for (:mod:`hpc_es.kinds`), asked of the shipped presets and of hand-made histories."""
from hpc_es import config, kinds


def test_every_preset_has_the_kind_its_purpose_says():
    for name in config.presets():
        cfg = config.load(name).to_dict()
        kind = kinds.of(cfg).name
        if cfg["run"]["method"] == "population":
            assert kind == "population" and kinds.of(cfg).unit == "block", name
        elif name.startswith("table1"):  # the test may use the name; the code may not
            assert kind == "table1" and kinds.of(cfg).command == "hpc-es table1", name
        else:
            assert kind == "training", name
    old = config.load("sgd_small_local").to_dict()
    del old["run"]["experiment"]  # a file of an earlier version
    assert kinds.of(old).name == "training"


def test_a_population_finishes_at_its_target_or_cap_and_training_at_its_iterations():
    pop = config.load("population_small_local").to_dict()
    target, cap = pop["population"]["target_rho"], pop["population"]["max_offspring"]
    assert not kinds.finished(pop, {"population_rho": [target - 0.01], "population_n": [cap - 2]}, 5)
    assert kinds.finished(pop, {"population_rho": [target], "population_n": [1000]}, 1)
    assert kinds.finished(pop, {"population_rho": [0.01], "population_n": [cap]}, 9)
    assert not kinds.finished(pop, {}, 0)
    sgd = config.load("sgd_small_local", ["run.iterations=5"]).to_dict()
    assert kinds.finished(sgd, {}, 5) and not kinds.finished(sgd, {}, 4) and kinds.finished(sgd, {}, -1)


def test_every_kind_names_functions_that_exist_and_the_cli_and_scripts_ask_it():
    """Each kind registers the function `hpc-es train` calls, its cost model's price, its closing
    line and its "nothing to do" reason: all import with the signatures their callers use; `hpc-es kind` prints the kind and its command in one line (jobs/local.sh reads it)."""
    import inspect
    from hpc_es import cli
    for kind in kinds.KINDS.values():
        run, price = kinds.resolve(kind.run), kinds.resolve(kind.price)
        assert callable(run) and list(inspect.signature(price).parameters) == ["s", "iterations", "runs", "rhos"]
        assert list(inspect.signature(kinds.resolve(kind.summary)).parameters) == ["cfg", "history", "out", "ranks"]
        assert list(inspect.signature(kinds.resolve(kind.stopped)).parameters) == ["cfg", "history", "start"]
    assert [k.name for k in kinds.KINDS.values() if k.arms] == ["table1"]  # priced and listed as all its arms
    for name, line in (("table1_small_local", "table1 hpc-es table1"), ("population_small_local", "population hpc-es train"),
                       ("sgd_small_local", "training hpc-es train")):
        assert _kind_line(cli, name) == line


def _kind_line(cli, name):
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["kind", name]) == 0
    return out.getvalue().strip()


def test_a_population_is_as_long_as_its_blocks_and_training_as_its_iterations():
    pop = config.load("population_small_local", ["population.step=500"]).to_dict()
    assert kinds.length(pop).startswith("blocks of 500 pseudo-offspring up to rho = 20%")
    sgd = config.load("sgd_small_local", ["run.iterations=7"]).to_dict()
    assert kinds.length(sgd) == "7 iterations per run" and kinds.length(sgd, 3) == "7 iterations per run, 3 runs"
