"""Typed run configuration: frozen dataclasses, TOML presets, ``--set`` overrides, validation.

Defaults are the paper's values (Sec. 4: mini-batch 50, Adam with learning rate 1e-3). A
config is resolved once (preset or file, then overrides), validated completely before any
work starts, and its dict is what results record. Every rejection names the key, the value
and what is allowed.
"""
import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources

from hpc_es.es import FITNESS, SUBSETS
from hpc_es.limited import CHOICES as BUCKET_CHOICES
from hpc_es.nets import ARCHITECTURES, INIT_SCHEMES
from hpc_es.optim import OPTIMIZERS


class ConfigError(ValueError):
    """A config file, preset name, key or value is not acceptable; the message says why."""


def _opt(default, doc, choices=None, lo=None, hi=None):
    """A field with its one-line doc and the values it accepts (checked by :func:`validate`)."""
    return field(default=default, metadata={"doc": doc, "choices": choices, "range": (lo, hi)})


@dataclass(frozen=True)
class NetConfig:
    arch: str = _opt("tf_tutorial", "the paper's 3,274,634- (tf_tutorial) or 28,938-parameter (small) CNN",
                     choices=tuple(ARCHITECTURES))
    init: str = _opt("tf", "init: TF tutorial (trunc. normal std 0.1, biases 0.1) or He", choices=INIT_SCHEMES)
    init_seed: int = _opt(0, "seed of the initial theta", lo=0, hi=2**63 - 1)
    theta_from: str = _opt("", "start from the theta of this results.h5 or checkpoint.h5 (e.g. a trained net, "
                           "ours); empty: the initial theta")


@dataclass(frozen=True)
class DataConfig:
    dir: str = _opt("", "MNIST directory; empty: $HPC_ES_DATA, else the per-user cache")
    batch_size: int = _opt(50, "mini-batch size (paper: 50)", lo=1, hi=60000)
    verify: bool = _opt(True, "check the SHA-256 of the data files on load")


@dataclass(frozen=True)
class OptimConfig:
    name: str = _opt("adam", "optimizer (paper: adam)", choices=OPTIMIZERS)
    lr: float = _opt(1e-3, "learning rate alpha (paper: 1e-3)", lo=0.0, hi=10.0)
    l2: float = _opt(0.0, "L2 coefficient: loss += l2/2 * sum(w^2) over weights (paper, 99% run: 2e-4)",
                     lo=0.0, hi=1.0)
    beta1: float = _opt(0.9, "Adam beta1", lo=0.0, hi=1.0)
    beta2: float = _opt(0.999, "Adam beta2", lo=0.0, hi=1.0)
    eps: float = _opt(1e-8, "Adam epsilon", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class ESConfig:
    n_offspring: int = _opt(10000, "pseudo-offspring N per iteration, both members of a pair counted (paper: 10,000)",
                            lo=2, hi=10**8)
    sigma: float = _opt(0.002, "perturbation std sigma (paper: 0.002)", lo=1e-12, hi=10.0)
    antithetic: bool = _opt(True, "mirrored pairs (+eps, -eps); N must then be even")
    fitness: str = _opt("raw", "raw rewards (paper) or centered ranks (Salimans et al.)",
                        choices=FITNESS)
    mode: str = _opt("minibatch", "one shared mini-batch per iteration, or a random subset per perturbation "
                     "(no-mini-batch ES, Sec. 4.2)", choices=("minibatch", "nominibatch"))
    subset: str = _opt("pair", "no-mini-batch mode: both members of an antithetic pair share one random subset "
                       "(ours: their reward difference then measures the perturbation alone) or every "
                       "pseudo-offspring draws its own (the paper's words, Sec. 4.2)", choices=SUBSETS)
    perturbation: str = _opt("full", "each pseudo-offspring perturbs all of theta, or one randomly chosen bucket "
                             "of at most es.bucket_size parameters (limited perturbation, Sec. 4.1)",
                             choices=("full", "limited"))
    bucket_size: int = _opt(5000, "largest bucket of limited perturbation (paper: 5,000); buckets never "
                            "cross a tensor", lo=1, hi=10**9)
    bucket_choice: str = _opt("uniform", "limited perturbation: draw buckets uniformly (ours; the paper: 'a randomly chosen "
                              "bucket') or in proportion to their size; the estimator weights by 1/p either way",
                              choices=BUCKET_CHOICES)
    delta: bool = _opt(True, "limited perturbation: evaluate offspring from cached activations of theta "
                       "(only the layers from the bucket's up)")
    delta_batch: bool = _opt(True, "limited perturbation with es.delta: a rank's offspring in a few numba calls "
                             "grouped by tensor, an antithetic pair at once (false: one Python call per "
                             "offspring, the earlier path; rewards equal up to float32 rounding)")
    aggregation: str = _opt("sharded", "every rank computes g_ES for its slice of theta, then Allgatherv (P floats), "
                            "or every rank computes all of g_ES (only rewards travel); same bits either way",
                            choices=("sharded", "replicated"))


@dataclass(frozen=True)
class NoiseConfig:
    seed: int = _opt(12345, "noise table seed", lo=0, hi=2**63 - 1)
    size: int = _opt(250_000_000, "noise table floats (1 GB as OpenAI's); must be >= the net's P",
                     lo=1, hi=2**40)


@dataclass(frozen=True)
class ProxyConfig:
    rho: float = _opt(0.04, "target correlation of the ES proxy g_true + m g_noise (paper: 0.04 and 0.20)",
                      lo=1e-6, hi=1.0)
    rho_from: str = _opt("", "ours: take rho per iteration from this ES run's results.h5 (run with "
                         "measure.correlation = true): iteration t gets the rho ES measured at t (a negative "
                         "one too: its step is then anti-correlated); proxy.rho is then unused")


@dataclass(frozen=True)
class MeasureConfig:
    correlation: bool = _opt(False, "log rho(g, g_true) over all parameters and per layer each iteration "
                             "(mini-batch ES or proxy; rank 0 computes g_true)")
    sgd_self_correlation: bool = _opt(False, "log the correlation of g_true on two independent random "
                                      "mini-batches each iteration (paper: 39.04%)")


@dataclass(frozen=True)
class PopulationConfig:
    target_rho: float = _opt(0.2, "stop when rho(g_ES, g_true) reaches this (paper: 0.20 at ~274,000)",
                             lo=1e-6, hi=1.0)
    step: int = _opt(1000, "pseudo-offspring added between re-estimates (paper: 1,000); even", lo=2, hi=10**8)
    max_offspring: int = _opt(400_000, "give up after this many pseudo-offspring", lo=2, hi=10**10)


@dataclass(frozen=True)
class RunConfig:
    method: str = _opt("sgd", "sgd (exact gradient), es (OpenAI-ES), es_first_order (ES's population with "
                       "first-order rewards; ours), proxy (SGD + noise at proxy.rho), population (offspring "
                       "needed for population.target_rho at fixed theta)",
                       choices=("sgd", "es", "es_first_order", "proxy", "population"))
    experiment: str = _opt("training", "what the config is for: training (one run of `hpc-es train`) or table1 "
                           "(the base config of `hpc-es table1`: each arm a training run); see hpc_es.kinds",
                           choices=("training", "table1"))
    iterations: int = _opt(2000, "optimizer updates (paper: 2,000)", lo=1, hi=10**9)
    seed: int = _opt(0, "run seed: keys every random draw of iteration t", lo=0, hi=2**63 - 1)
    eval_every: int = _opt(100, "validate on all 10,000 test images every k iterations (0: at the end only)",
                           lo=0, hi=10**9)
    eval_chunk: int = _opt(100, "test images per forward pass while validating", lo=1, hi=10000)
    checkpoint_every: int = _opt(100, "write a checkpoint every K iterations (0: only at the end)",
                                 lo=0, hi=10**9)
    log_every: int = _opt(10, "rank 0 prints a progress line every k iterations", lo=1, hi=10**9)
    keep_theta: str = _opt("", "keep theta after these iterations as theta_<t>.h5 in the run directory, "
                           "comma-separated (e.g. '250,500,1000': thetas a later run starts from with net.theta_from)")


# Keys that earlier versions kept elsewhere: old name -> new name (config files and run files).
ES_METHODS = ("es", "es_first_order")  # the methods that train on an ES population (noise table, es.*)
MOVED_KEYS = {"population.theta_from": "net.theta_from"}

# Keys that do not change the trajectory of theta: a resume may change them.
RESUMABLE_KEYS = ("run.experiment", "run.keep_theta", "run.iterations", "run.eval_every", "run.eval_chunk", "run.checkpoint_every",
                  "run.log_every", "data.dir", "data.verify", "measure.correlation",
                  "measure.sgd_self_correlation", "es.aggregation",
                  "population.target_rho", "population.max_offspring")  # where a population stops, not its curve


@dataclass(frozen=True)
class Config:
    net: NetConfig = field(default_factory=NetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    es: ESConfig = field(default_factory=ESConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTION_CLASSES = {"net": NetConfig, "data": DataConfig, "optim": OptimConfig, "es": ESConfig,
                    "noise": NoiseConfig, "proxy": ProxyConfig, "measure": MeasureConfig,
                    "population": PopulationConfig, "run": RunConfig}


def presets():
    """Names of the bundled presets (``hpc_es/presets/*.toml``)."""
    root = resources.files("hpc_es") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load(source, overrides=()):
    """Resolve a config from a preset name or a TOML file, then ``key=value`` overrides."""
    return from_dict(apply_overrides(_read_source(source), overrides), origin=str(source))


def apply_overrides(raw, overrides):
    """A copy of the nested config dict ``raw`` with ``section.key=value`` overrides applied (as
    ``--set`` would apply them), unvalidated: e.g. a stored run's config as a resume would see it."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        _apply_override(raw, item)
    return raw


def from_dict(raw, origin="config"):
    """Build and validate a :class:`Config` from nested dicts; unknown keys are errors (a key
    of :data:`MOVED_KEYS` is read under its new name)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a table of sections {sorted(_SECTION_CLASSES)}")
    raw = _upgrade(raw)
    unknown = sorted(set(raw) - set(_SECTION_CLASSES))
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s) {unknown}; allowed: {sorted(_SECTION_CLASSES)}")
    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table, got {values!r}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{origin}: unknown key '{name}.{key}'; allowed: {sorted(known)}")
            values = {**values, key: _check(f"{name}.{key}", value, known[key])}
        sections[name] = cls(**values)
    cfg = Config(**sections)
    _check_combination(cfg, origin)
    return cfg


def keep_theta(cfg):
    """The iterations of ``run.keep_theta`` (a set of ints); ConfigError naming the key otherwise."""
    text = cfg.run.keep_theta.strip()
    try:
        its = {int(x) for x in text.split(",")} if text else set()
    except ValueError:
        its = {0}
    if any(t < 1 for t in its):
        raise ConfigError(f"run.keep_theta = {cfg.run.keep_theta!r}: expected positive iterations, comma-separated "
                          "(e.g. '250,500,1000')")
    return its


def _check_combination(cfg, origin):
    """Constraints between keys (each message names the keys involved)."""
    keep_theta(cfg)
    method = cfg.run.method
    if method == "es_first_order" and cfg.es.mode != "minibatch":
        raise ConfigError(f"{origin}: run.method = 'es_first_order' needs es.mode = 'minibatch' (got "
                          f"{cfg.es.mode!r}): with a subset per pair every pair needs its own gradient, so "
                          f"first-order rewards cost as much as real ES there")
    if cfg.measure.correlation and (method not in ES_METHODS + ("proxy",) or cfg.es.mode != "minibatch"):
        raise ConfigError(f"{origin}: measure.correlation = true needs run.method = 'es', 'es_first_order' or 'proxy' with "
                          f"es.mode = 'minibatch' (got {method!r}, {cfg.es.mode!r}): g_true is defined per mini-batch")
    if cfg.proxy.rho_from and method != "proxy":
        raise ConfigError(f"{origin}: proxy.rho_from = {cfg.proxy.rho_from!r} needs run.method = 'proxy' "
                          f"(got {method!r})")
    if method == "population":
        if cfg.population.step % 2:
            raise ConfigError(f"{origin}: population.step = {cfg.population.step}: must be even (antithetic pairs)")
        if cfg.es.fitness != "raw":
            raise ConfigError(f"{origin}: run.method = 'population' re-uses earlier offspring, so es.fitness "
                              f"must be 'raw' (got {cfg.es.fitness!r})")
    if method == "population" and cfg.es.perturbation != "full":
        raise ConfigError(f"{origin}: run.method = 'population' measures full perturbations; "
                          f"es.perturbation must be 'full' (got {cfg.es.perturbation!r})")
    if method not in ES_METHODS + ("population",):
        return
    if cfg.es.perturbation == "limited" and cfg.noise.size < cfg.es.bucket_size:
        raise ConfigError(f"{origin}: noise.size = {cfg.noise.size}: shorter than one bucket "
                          f"(es.bucket_size = {cfg.es.bucket_size})")
    if cfg.es.antithetic and cfg.es.n_offspring % 2:
        raise ConfigError(f"{origin}: es.n_offspring = {cfg.es.n_offspring}: must be even with "
                          f"es.antithetic = true (N counts both members of each pair)")
    n_params = ARCHITECTURES[cfg.net.arch]().n_params
    if cfg.noise.size < n_params:
        raise ConfigError(f"{origin}: noise.size = {cfg.noise.size}: shorter than one perturbation of "
                          f"net.arch = {cfg.net.arch!r} ({n_params} parameters)")


def trajectory_diff(old, new):
    """Keys (``section.key``) whose values differ between two config dicts and change the
    trajectory of theta (everything but :data:`RESUMABLE_KEYS`)."""
    keys = []
    defaults = Config().to_dict()  # a key that files of earlier versions lack had its default then
    old, new = _upgrade(old), _upgrade(new)
    for section in sorted(set(old) | set(new)):
        a = {**defaults.get(section, {}), **old.get(section, {})}
        b = {**defaults.get(section, {}), **new.get(section, {})}
        for key in sorted(set(a) | set(b)):
            name = f"{section}.{key}"
            if name not in RESUMABLE_KEYS and a.get(key) != b.get(key):
                keys.append(f"{name}: {a.get(key)!r} -> {b.get(key)!r}")
    return keys


def _upgrade(raw):
    """``raw`` with every key of :data:`MOVED_KEYS` under its new name (a copy; ``raw`` is kept).
    An old key whose value is the default is dropped (files of earlier versions hold them all)."""
    if not any(isinstance(raw.get(o.split(".")[0]), dict) and o.split(".")[1] in raw[o.split(".")[0]]
               for o in MOVED_KEYS):
        return raw
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for old, new in MOVED_KEYS.items():
        (os_, ok), (ns, nk) = old.split("."), new.split(".")
        if isinstance(out.get(os_), dict) and ok in out[os_]:
            value = out[os_].pop(ok)
            if value != _default(new):
                out.setdefault(ns, {}).setdefault(nk, value)
    return out


def _default(name):
    section, key = name.split(".")
    return {f.name: f.default for f in dataclasses.fields(_SECTION_CLASSES[section])}[key]


def describe():
    """Every key with its default and doc line (for ``hpc-es config --help``-style listings)."""
    lines = []
    for name, cls in _SECTION_CLASSES.items():
        for f in dataclasses.fields(cls):
            lines.append(f"{name}.{f.name} = {f.default!r}  # {f.metadata['doc']}")
    return "\n".join(lines)


def _check(key, value, f):
    """Type- and range-check one value; returns it (ints are accepted where floats are)."""
    want = f.type
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{key} = {value!r}: expected {want.__name__}, got {type(value).__name__}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key} = {value!r}: expected one of {list(choices)}")
    lo, hi = f.metadata.get("range", (None, None))
    if lo is not None and not lo <= value <= hi:  # also rejects NaN
        raise ConfigError(f"{key} = {value!r}: expected a value in [{lo}, {hi}]")
    return value


def _read_source(source):
    source = str(source)
    if source.endswith(".toml") or os.path.sep in source:
        try:
            with open(source, "rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML ({err})") from None
    if source not in presets():
        close = difflib.get_close_matches(source, presets(), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"preset {source!r} not found; {hint}presets: {', '.join(presets())} "
                          f"(or give a path to a .toml file)")
    return tomllib.loads((resources.files("hpc_es") / "presets" / f"{source}.toml").read_text())


def _apply_override(raw, item):
    """Apply one ``section.key=value``; the value is read as TOML, else taken as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    path, text = item.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {item!r}: expected section.key=value with one dot, e.g. run.iterations=100")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise ConfigError(f"--set {item!r}: [{parts[0]}] is not a table")
    section[parts[1]] = value
