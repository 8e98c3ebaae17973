import pytest

from hpc_es import config


def test_every_preset_loads_and_defaults_are_the_papers():
    for name in config.presets():
        config.load(name)
    c = config.Config()
    assert (c.data.batch_size, c.optim.name, c.optim.lr, c.net.arch) == (50, "adam", 1e-3, "tf_tutorial")


def test_overrides_parse_toml_values_and_bare_strings():
    c = config.load("sgd_small_local", ["run.iterations=7", "net.arch=tf_tutorial", "optim.lr=2",
                                        'data.dir="/x y"', "data.verify=false"])
    assert (c.run.iterations, c.net.arch, c.optim.lr, c.data.dir, c.data.verify) == \
        (7, "tf_tutorial", 2.0, "/x y", False)


@pytest.mark.parametrize("override,message", [
    ("run.iterations=0", r"run.iterations = 0: expected a value in \[1, "),
    ("run.iters=3", r"unknown key 'run.iters'; allowed: \[.*'iterations'"),
    ("optim.lr=abc", r"optim.lr = 'abc': expected float, got str"),
    ("optim.lr=nan", r"optim.lr = nan: expected a value in"),
    ("run.iterations=true", r"run.iterations = True: expected int, got bool"),
    ("net.arch=resnet", r"net.arch = 'resnet': expected one of \['tf_tutorial', 'small'\]"),
    ("bogus.key=1", r"unknown section\(s\) \['bogus'\]"),
    ("noequals", r"expected section.key=value"),
    ("a.b.c=1", r"with one dot"),
])
def test_bad_values_name_key_value_and_allowed(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load("sgd_small_local", [override])


def test_bad_sources(tmp_path):
    with pytest.raises(config.ConfigError, match=r"preset 'nope' not found; presets: \["):
        config.load("nope")
    with pytest.raises(config.ConfigError, match=r"missing.toml: config file not found"):
        config.load(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\niterations = 3")
    with pytest.raises(config.ConfigError, match=r"bad.toml: not valid TOML"):
        config.load(str(bad))
    bad.write_text("run = 3")
    with pytest.raises(config.ConfigError, match=r"\[run\] must be a table"):
        config.load(str(bad))


def test_trajectory_diff_ignores_keys_that_keep_theta_bit_identical():
    old = config.load("es_small_local").to_dict()
    new = config.load("es_small_local", ["run.iterations=999", "es.aggregation=replicated",
                                         "measure.sgd_self_correlation=true", "es.sigma=0.01"]).to_dict()
    assert config.trajectory_diff(old, new) == ["es.sigma: 0.002 -> 0.01"]
