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
