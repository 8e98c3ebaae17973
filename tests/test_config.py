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
    with pytest.raises(config.ConfigError, match=r"preset 'nope' not found; presets: corr_small_local, "):
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


# ---- fuzzing: random keys, types and values ------------------------------------------------
import dataclasses  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_FIELDS = [(section, f.name) for section, cls in config._SECTION_CLASSES.items() for f in dataclasses.fields(cls)]
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["tf_tutorial", "small", "es", "sgd", "proxy", "population", "limited", "full",
                     "nominibatch", "centered_ranks", "size", "replicated", "he", "adam"]),
)
_NAMES = st.one_of(st.sampled_from(_FIELDS), st.tuples(st.text(max_size=8), st.text(max_size=8)))


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(config.presets()), edits=st.lists(st.tuples(_NAMES, _VALUES), min_size=1, max_size=4))
def test_fuzzed_configs_are_accepted_or_rejected_with_the_key_named(base, edits):
    """Random sections, keys, types and values on top of every preset: the result is a valid
    Config or a ConfigError that names an edited key (or its section); never another exception."""
    raw = config._read_source(base)
    for (section, key), value in edits:
        raw.setdefault(section, {}) if isinstance(raw.get(section, {}), dict) else None
        if isinstance(raw.get(section), dict):
            raw[section][key] = value
        else:
            raw[section] = {key: value}
    try:
        cfg = config.from_dict(raw, origin=base)
    except config.ConfigError as err:
        text = str(err)
        named = [f"{s}.{k}" for (s, k), _ in edits] + [repr(s) for (s, k), _ in edits]
        # a rejection by a constraint between keys names the keys of that constraint, one of
        # which was edited, or else names a key the preset itself set (then listed in `raw`)
        assert any(n in text for n in named) or any(f"{s}.{k}" in text for s in raw for k in
                                                      (raw[s] if isinstance(raw[s], dict) else {})), text
        return
    assert isinstance(cfg, config.Config)
    for (section, key), value in dict(edits).items():  # an accepted edit (the last of a key) was kept
        if (section, key) in _FIELDS:
            got = getattr(getattr(cfg, section), key)
            assert got == value or (isinstance(value, int) and got == float(value)), (section, key, value, got)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(max_size=40))
def test_fuzzed_set_overrides_never_raise_anything_but_config_errors(text):
    try:
        config.load("es_small_local", [text])
    except config.ConfigError:
        pass


def test_a_key_added_since_a_checkpoint_was_written_counts_as_its_default():
    new = config.load("es_nominibatch_small_local").to_dict()
    old = {section: dict(values) for section, values in new.items()}
    del old["es"]["subset"]  # written before es.subset existed: it had the default's behaviour
    assert config.trajectory_diff(old, new) == []
    literal = config.load("es_nominibatch_small_local", ["es.subset=offspring"]).to_dict()
    assert config.trajectory_diff(old, literal) == ["es.subset: 'pair' -> 'offspring'"]


def test_a_moved_key_is_read_under_its_new_name_in_configs_and_old_run_files():
    """population.theta_from moved to net.theta_from: an old TOML still works, and an old
    checkpoint's config (which holds the old key at its default) resumes without a diff."""
    cfg = config.from_dict({"population": {"theta_from": "x.h5"}})
    assert cfg.net.theta_from == "x.h5"
    old = config.Config().to_dict()
    del old["net"]["theta_from"]
    old["population"]["theta_from"] = ""
    assert config.trajectory_diff(old, config.Config().to_dict()) == []
    old["population"]["theta_from"] = "y.h5"
    assert config.trajectory_diff(old, config.Config().to_dict()) == ["net.theta_from: 'y.h5' -> ''"]
