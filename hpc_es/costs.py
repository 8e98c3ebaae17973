"""Cost model: what a run of a config costs on R ranks, predicted from the config itself.

Nothing here is retyped from a preset: N, iterations, mode, perturbation, bucket size,
validation and checkpoint cadence, noise-table size and the net all come from the config.
The per-unit costs come from :func:`measure_units`, which times the training loop's own code
paths (``es.evaluate`` on a population drawn as in training, ``es.gradient``, the optimizer,
``net.n_correct``, ``io.save_checkpoint``, the noise-table fill) on one core here; the
collectives from an alpha-beta model (:class:`Network`), fitted to measurements by
``benchmarks/collectives.py``. A run's wall time is

    start-up (process, MNIST, noise table, validation of theta_0)
    + iterations x (evaluate + communicate + aggregate + update + measure + validate / k)
    + checkpoints and results writes

with, per iteration on R ranks (K = N/2 perturbations with antithetic pairs):

    ES        evaluate   ceil(N/R) offspring (+ base passes of limited perturbation's delta evaluation)
              communicate Allgatherv of N rewards (8 bytes) + Allgatherv of P floats (sharded) + the
                          signal allreduce
              aggregate  K x P/R floats (dense) or K x mean bucket / R (sparse; sharded), else x R
    first-order ES (ours)  evaluate   one backward pass on every rank + ceil(K/R) directional
              derivatives of P floats (dense) or of a mean bucket (limited);
              communicate Allgatherv of K derivatives (8 bytes) + ES's; aggregate as ES
    SGD/proxy every rank computes the same gradient (no speed-up), validation split over R
    population blocks of population.step offspring until the theory's N for the target rho;
              aggregation replicated on every rank
    Table 1   its runs spread over the ranks, each serial

Memory per node: one noise table plus, per rank, the process (measured) and the net's arrays.
The model is ours; ``benchmarks/cost_model.py`` checks it against shortened runs of every
paper-scale preset (docs/RESULTS.md).
"""
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np

from hpc_es import kinds

TEST_IMAGES = 10_000


@dataclass(frozen=True)
class Network:
    """alpha (s per message step) and beta (s per byte) of each collective the loop uses:
    T(p, n bytes) = alpha ceil(log2 p) + beta n (p - 1) / p for Allgatherv (n = all gathered
    bytes), 2 alpha ceil(log2 p) for an allreduce of one integer, 0 on one rank."""

    allgatherv: tuple = (5e-6, 1 / 5e9)
    allreduce: tuple = (5e-6, 0.0)
    source: str = "assumed (ours): 5 us latency, 5 GB/s per rank, a typical InfiniBand cluster"

    def time(self, kind, ranks, nbytes=0):
        if ranks <= 1:
            return 0.0
        alpha, beta = getattr(self, kind)
        steps = math.ceil(math.log2(ranks))
        if kind == "allreduce":
            return 2 * alpha * steps
        return alpha * steps + beta * nbytes * (ranks - 1) / ranks

    @classmethod
    def from_json(cls, path):
        with open(path) as f:
            return cls.from_fit(json.load(f)["fit"], f"fitted to {os.path.basename(path)} (shared memory, one machine)")

    @classmethod
    def from_fit(cls, fit, source):
        return cls(allgatherv=tuple(fit["allgatherv"]), allreduce=tuple(fit["allreduce"]), source=source)


@dataclass
class Prediction:
    """Seconds per phase of one iteration (``phases``), the one-off costs, and the totals."""

    config: dict
    ranks: int
    ranks_per_node: int
    iterations: int
    phases: dict
    startup: float
    writes: float
    wall: float
    memory_per_node: float  # bytes
    notes: list = field(default_factory=list)

    @property
    def per_iteration(self):
        return sum(self.phases.values())

    @property
    def core_hours(self):
        return self.wall * self.ranks / 3600


def time_call(fn, repeats=3, warmup=1, sync=None):
    """(median seconds, all seconds) of ``fn()`` after ``warmup`` untimed calls; ``sync()`` (a
    barrier: every rank then starts timing together) after the warm-up. The benchmarks time
    with it too, so a benchmark and the cost model measure the same way."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds)), seconds


def measure_units(cfgs, dataset, table_floats=None, comm=None):
    """Seconds of one core for each unit of work that ``cfgs`` (configs) need, through the
    training loop's own code: {"tf_tutorial": {...}, "small": {...}, "table_fill_float",
    "write_byte", "process_start", "data_load", "rss_rank"}, on a noise table of the configs'
    size (``table_floats`` to override). Takes one to two minutes.

    With ``comm`` (collective), every rank measures at the same time, as every core of a node
    works during training (they share caches and memory bandwidth), and every rank returns the
    mean over the ranks: run it on as many ranks as the node has cores."""
    from hpc_es import nets, noise
    sync = comm.Barrier if comm is not None else None
    # the configs' own table: windows spread over 1 GiB miss caches and TLB as in training
    table = noise.build_table(1, table_floats or max(c.noise.size for c in cfgs))

    def clock(fn, repeats=5):  # the median of 5: single timings of one call vary by +-25% on a shared VM
        return time_call(fn, repeats, sync=sync)[0]

    units = {}
    for arch in sorted({c.net.arch for c in cfgs}):
        mine = [c for c in cfgs if c.net.arch == arch]
        net = nets.build(arch)
        units[arch] = u = _net_units(net, mine, table, dataset, clock)
        for size in sorted({c.es.bucket_size for c in mine if c.es.perturbation == "limited"}):
            u.update(_limited_units(net, size, mine[0].data.batch_size, table, dataset, clock))
    units.update(_machine_units(clock))
    if comm is not None and comm.Get_rank() != 0:
        units.update(dict.fromkeys(("process_start", "data_load", "rss_rank", "imports"), 0.0))
    else:
        units.update(_process_start())
    if comm is not None:
        units = _mean_over_ranks(comm, units)
    return units


def _sample(es_cfg, P, table, n_images, batch, buckets=None):
    """A population drawn as in training (iteration 0, seed 0)."""
    from hpc_es import es
    return es.sample_population(es_cfg, 0, 0, P, table.size, n_images, batch, buckets)


def _net_units(net, cfgs, table, dataset, clock):
    """Seconds per unit of the dense paths of ``net``: an offspring (mini-batch and subset), an
    SGD step, Adam and the proxy's noise per float, a validated image, and the dense
    aggregation and directional derivatives per float (at the configs' largest K, <= 5,000)."""
    from hpc_es import config as config_mod, es, kernels, noise, optim
    x, y = dataset.train_images, dataset.train_labels
    P, batch = net.n_params, cfgs[0].data.batch_size
    theta = net.init_theta(0)
    n = 8 if P > 1e6 else 64
    work, rewards, grad = np.empty_like(theta), np.empty(n), np.empty_like(theta)
    u = {}
    for key, mode in (("offspring", "minibatch"), ("offspring_subset", "nominibatch")):
        pop = _sample(config_mod.ESConfig(n_offspring=n, mode=mode), P, table, len(y), batch)
        u[key] = clock(lambda: es.evaluate(net, theta, table, pop, 0.002, x, y, 0, n, rewards, work)) / n
    opt = optim.build(config_mod.OptimConfig(), P)
    b = es.minibatch(0, 0, len(y), batch)
    u["sgd_step"] = clock(lambda: net.loss_and_grad(theta.copy(), x[b], y[b], out=grad))
    u["adam_float"] = clock(lambda: opt.step(theta.copy(), grad)) / P
    rng = np.random.default_rng(0)
    u["proxy_float"] = clock(lambda: rng.standard_normal(P, np.float32)) / P
    u["validate_image"] = clock(lambda: net.n_correct(theta, dataset.test_images[:1000],
                                                      dataset.test_labels[:1000]), 1) / 1000
    # Dense aggregation reuses each table float from cache about K x block / table times, so
    # its per-float cost falls with K: timed at the largest K of the configs (<= 5,000).
    k = min(5000, max([_perturbations(c) for c in cfgs] + [64]))
    w = np.random.default_rng(1).standard_normal(k)
    offsets = noise.sample_offsets(np.random.default_rng(2), k, P, table.size)
    u["aggregate_float"] = clock(lambda: es.aggregate(table, offsets, w, grad)) / (k * P)
    d = np.empty(k)
    u["directional_float"] = clock(lambda: kernels.directional_dense(table, offsets, grad, d)) / (k * P)
    return u


def _limited_units(net, size, batch, table, dataset, clock):
    """Seconds per unit of limited perturbation with buckets of <= ``size``: the base pass, a
    mean offspring and an offspring per tensor (delta evaluation), and the sparse aggregation
    and directional derivatives per float."""
    from hpc_es import config as config_mod, es, limited
    x, y = dataset.train_images, dataset.train_labels
    theta = net.init_theta(0)
    work, grad = np.empty_like(theta), np.empty_like(theta)
    buckets = limited.partition(net.layout, size)
    delta = limited.DeltaEvaluator(net)
    lim = _sample(config_mod.ESConfig(n_offspring=2 * 512, perturbation="limited", bucket_size=size), net.n_params,
                  table, len(y), batch, buckets)
    r = np.empty(lim.size)
    delta.set_base(theta, x[lim.batch], y[lim.batch])
    u = {f"base_pass_{size}": clock(lambda: delta.set_base(theta, x[lim.batch], y[lim.batch]))}
    u[f"limited_offspring_{size}"] = (clock(lambda: es.evaluate(net, theta, table, lim, 0.002, x, y, 0, lim.size, r,
                                                                work, delta)) - u[f"base_pass_{size}"]) / lim.size
    u[f"limited_tensor_{size}"] = _per_tensor(net, theta, x, y, table, buckets, clock)
    f = np.random.default_rng(3).standard_normal(lim.size)
    floats = float(lim.length.sum())
    u[f"aggregate_sparse_float_{size}"] = clock(lambda: es.gradient(table, lim, f, 0.002, grad)) / floats
    d = np.empty(lim.offsets.size)
    u[f"directional_sparse_float_{size}"] = clock(lambda: es.directional_derivatives(table, lim, grad, 0, d.size, d)) / floats
    return u


def _machine_units(clock):
    """Seconds per float of the noise table's fill and per byte of a checkpoint's write."""
    import tempfile
    from hpc_es import io, noise
    chunk = np.empty(4 * noise.CHUNK, np.float32)
    units = {"table_fill_float": clock(lambda: noise.fill_chunks(3, 0, 4, chunk, 4 * noise.CHUNK), 1) / chunk.size}
    with tempfile.TemporaryDirectory() as tmp:
        P = 3_274_634
        theta = np.zeros(P, np.float32)
        units["write_byte"] = clock(lambda: io.save_checkpoint(tmp, 1, theta, {"m": theta, "v": theta,
                                                                               "step_count": np.array(1)},
                                                               {}, {}, {}), 1) / (3 * 4 * P)
    return units


def _per_tensor(net, theta, x, y, table, buckets, clock):
    """Seconds per limited offspring whose bucket lies in each tensor, batched antithetic pairs
    of one tensor per call (``DeltaEvaluator.losses``), the base pass excluded: {tensor: s}."""
    from hpc_es import limited
    delta = limited.DeltaEvaluator(net)
    delta.set_base(theta, x[:50], y[:50])
    out = {}
    for t, p in enumerate(net.layout):
        ids = np.flatnonzero(buckets.tensor == t)
        pairs = 128 if p.layer >= len(net.layers) - 2 else 4  # the top two layers: cheap offspring
        picks = np.repeat(ids[np.arange(pairs) % ids.size], 2)
        offsets = np.repeat(np.arange(pairs, dtype=np.int64) * 997, 2)
        scales = np.tile(np.array([0.002, -0.002], np.float32), pairs)
        losses = np.empty(2 * pairs)
        out[p.name] = clock(lambda: delta.losses(table, buckets.start[picks], buckets.size[picks], offsets, scales,
                                                 losses)) / (2 * pairs)
    return out


def slowest_share(per_tensor, net, buckets, choice, n_perturbations, ranks, batch, antithetic, draws=10, seed=0):
    """Expected seconds of the slowest of ``ranks`` ranks evaluating their deal
    (:func:`hpc_es.es.deal`, by the same cost key as training: the forward pass from the
    bucket's layer up) of ``n_perturbations`` limited perturbations drawn with ``choice``,
    priced by ``per_tensor`` (the layout's tensor names -> seconds per offspring). Every rank
    waits for the slowest at the rewards' Allgatherv; with few perturbations per rank one
    costly bucket (a pair in conv1: 33 ms on tf_tutorial, against 0.06 ms in fc1) can set it.
    By simulation (``draws`` populations, seeded: the same number every call)."""
    from hpc_es import es
    per = 2 if antithetic else 1
    cost = per * np.array([per_tensor[p.name] for p in net.layout])[buckets.tensor]  # per perturbation of a bucket
    tensor_layer = np.array([p.layer for p in net.layout])[buckets.tensor]
    key = np.array([sum(a.flops(batch) for a in net.layers[i:]) for i in range(len(net.layers))])[tensor_layer]
    p = buckets.probabilities(choice)
    rng = np.random.default_rng(seed)
    slowest = []
    for _ in range(draws):
        ids = rng.choice(cost.size, size=n_perturbations, p=p)
        counts, order = es.deal(key[ids], ranks, antithetic)
        rank_of = np.repeat(np.arange(ranks), counts // per)
        slowest.append(float(np.bincount(rank_of, weights=cost[ids[order[::per] // per]], minlength=ranks).max()))
    return float(np.mean(slowest))


def _perturbations(cfg):
    """K, the distinct perturbations of one ES iteration of ``cfg`` (0 for SGD and the proxy)."""
    from hpc_es.config import ES_METHODS
    if cfg.run.method not in ES_METHODS + ("population",):
        return 0
    n = cfg.population.step if cfg.run.method == "population" else cfg.es.n_offspring
    return n // 2 if cfg.es.antithetic else n


def _mean_over_ranks(comm, units):
    """Every unit averaged over the ranks (the process start-up: rank 0's, the only one measured)."""
    parts = comm.allgather(units)
    solo = ("process_start", "data_load", "rss_rank", "imports")

    def mean(values, key):
        if isinstance(values[0], dict):
            return {k: mean([v[k] for v in values], k) for k in values[0]}
        return values[0] if key in solo else float(np.mean(values))

    return {k: mean([p[k] for p in parts], k) for k in units}


def _process_start():
    """A fresh process's start-up (interpreter, imports, numba's cached kernels, MNIST load)
    and its resident memory then, measured in a subprocess."""
    code = ("import time, resource; t0 = time.perf_counter(); import numpy as np; "
            "from hpc_es import train, steps, es, data, nets; n = nets.build('small'); "
            "n.loss(n.init_theta(0), np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.int64)); "
            "t1 = time.perf_counter(); d = data.load_mnist(); t2 = time.perf_counter(); "
            "print(t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    total = time.perf_counter() - start
    imports, load, rss = float(out[0]), float(out[1]), float(out[2])
    return {"process_start": total - load, "data_load": load, "rss_rank": rss, "imports": imports}


@dataclass(frozen=True)
class Setting:
    """What every price needs: the config, its net, the per-unit costs of the net (``u``) and of
    the machine (``units``), R ranks with ``rpn`` per node, the network, and whether g (or a
    population's sum) is aggregated in slices, one per rank."""

    cfg: object
    net: object
    units: dict
    ranks: int
    rpn: int
    network: Network

    @property
    def u(self):
        return self.units[self.cfg.net.arch]

    @property
    def P(self):
        return self.net.n_params

    @property
    def sharded(self):
        return self.cfg.es.aggregation == "sharded" and self.ranks > 1

    def validation(self):
        """One validation over the 10,000 test images, split over the ranks."""
        return math.ceil(TEST_IMAGES / self.ranks) * self.u["validate_image"] + self.network.time("allreduce", self.ranks)

    def startup(self, uses_table):
        """The process (rank 0 loads MNIST first, then the rest) and the node's share of the table."""
        s = self.units["process_start"] + self.units["data_load"] * (2 if self.ranks > 1 else 1)
        if uses_table:
            s += math.ceil(self.cfg.noise.size / self.rpn) * self.units["table_fill_float"]
        return s

    def writes(self, iterations, state_bytes):
        """Checkpoints (theta and ``state_bytes`` of state) every ``run.checkpoint_every``
        iterations, the last counted once, and the results' theta."""
        every = self.cfg.run.checkpoint_every
        n_saves = (iterations // every + (iterations % every > 0)) if every else 1
        return n_saves * (4 * self.P + state_bytes + 4 * self.P) * self.units["write_byte"]

    def memory(self, uses_table, sharded_state):
        """Per node: one noise table, and per rank the process and the net's arrays (theta,
        grad, work, a slice; Adam's m and v, in slices when the update is sharded)."""
        P = self.P
        arrays = 4 * 4 * P + 2 * 4 * P / (self.ranks if sharded_state else 1)
        return (4 * self.cfg.noise.size if uses_table else 0) + self.rpn * (self.units["rss_rank"] + arrays)


def predict(cfg, ranks, units, network=None, ranks_per_node=None, iterations=None, runs=1, rhos=()):
    """The :class:`Prediction` of ``cfg`` on ``ranks`` ranks (``ranks_per_node`` per node,
    default all on one node up to 128), ``iterations`` (default the config's). ``runs`` and
    ``rhos``: a Table 1 run (``runs`` seeds of SGD and a proxy per rho, spread over the ranks).
    Priced by its kind's function (:data:`hpc_es.kinds.KINDS`)."""
    from hpc_es import nets
    s = Setting(cfg, nets.build(cfg.net.arch), units, ranks, min(ranks, ranks_per_node or 128), network or Network())
    price = kinds.resolve(kinds.of(cfg.to_dict()).price)
    return price(s, iterations if iterations is not None else cfg.run.iterations, runs, rhos)


def _phases():
    return dict.fromkeys(("evaluate", "communicate", "aggregate", "update", "measure", "validate"), 0.0)


def price_training(s, iterations, runs=1, rhos=()):
    """A training run (SGD, the proxy, ES, first-order ES): its method's phases, the
    measurements, validation every ``run.eval_every``; checkpoints of theta and Adam's m and v."""
    from hpc_es.config import ES_METHODS
    cfg, run = s.cfg, s.cfg.run
    phases, notes = _phases(), []
    _METHODS[run.method](s, phases, notes, rhos)
    _measurements(s, phases)
    validate = s.validation()
    phases["validate"] = validate / run.eval_every if run.eval_every else validate / max(iterations, 1)
    uses_table = run.method in ES_METHODS
    startup = s.startup(uses_table) + (validate if run.eval_every else 0.0)  # theta_0's validation
    writes = s.writes(iterations, 2 * 4 * s.P)
    wall = startup + iterations * sum(phases.values()) + writes
    memory = s.memory(uses_table, sharded_state=uses_table and s.sharded)
    return Prediction(cfg.to_dict(), s.ranks, s.rpn, iterations, phases, startup, writes, wall, memory, notes)


def price_population(s, iterations=None, runs=1, rhos=()):
    """The population for a target rho: blocks of ``population.step`` offspring until the
    theory's N (or the cap), each evaluated over the ranks and summed into a float64 running
    sum (checkpointed with theta); g_true once at the start; no validation. ``iterations`` is
    ignored: a population's length is its blocks."""
    from hpc_es import analysis
    pc, u, R, P = s.cfg.population, s.u, s.ranks, s.P
    needed = min(2 * analysis.pairs_for_rho(pc.target_rho, P), pc.max_offspring)
    blocks = math.ceil(needed / pc.step)
    phases = _phases()
    phases["evaluate"] = math.ceil(pc.step / R) * u["offspring"]
    phases["communicate"] = (s.network.time("allgatherv", R, 8 * pc.step)
                             + (s.network.time("allgatherv", R, 8 * P) if s.sharded else 0.0))
    phases["aggregate"] = (pc.step // 2) * (P / R if s.sharded else P) * u["aggregate_float"]
    startup = s.startup(uses_table=True) + u["sgd_step"]
    writes = s.writes(blocks, 2 * 4 * P + 8 * P)
    wall = startup + blocks * sum(phases.values()) + writes
    notes = [f"{blocks} blocks of {pc.step:,} offspring: the theory's N = {needed:,.0f} for rho = {pc.target_rho:g}"]
    return Prediction(s.cfg.to_dict(), R, s.rpn, blocks, phases, startup, writes, wall,
                      s.memory(uses_table=True, sharded_state=False), notes)


def price_table1(s, iterations, runs=1, rhos=()):
    """Table 1: (1 + len(rhos)) x ``runs`` serial runs of its base config (SGD, then the proxy
    at each rho) spread over the ranks, each validating all 10,000 images at its end; without
    ``rhos``, one run of its base config."""
    p = price_training(s, iterations, runs, rhos)
    if not rhos:
        return p
    u, tasks = s.u, runs * (1 + len(rhos))
    per_run = iterations * p.per_iteration + p.writes + TEST_IMAGES * u["validate_image"]
    per_run += iterations * s.P * u["proxy_float"] * len(rhos) / (1 + len(rhos))  # the proxies' noise, on average
    wall = s.units["process_start"] + s.units["data_load"] + math.ceil(tasks / s.ranks) * per_run
    p.notes.append(f"{tasks} runs of {iterations:,} iterations, {math.ceil(tasks / s.ranks)} after another on each rank")
    return replace(p, wall=wall)


def _es(s, phases, notes, rhos):
    """ES: ceil(N/R) offspring per rank, the rewards' Allgatherv, the aggregation (dense or
    sparse, in slices when sharded) and Adam on the rank's slice."""
    e, u, R, P, net = s.cfg.es, s.u, s.ranks, s.P, s.net
    N = e.n_offspring
    K = N // 2 if e.antithetic else N
    if e.perturbation == "limited":
        from hpc_es import limited
        buckets = limited.partition(net.layout, e.bucket_size)
        phases["evaluate"] = _limited_evaluate(s, buckets, K, notes)
        mean_len = float((buckets.probabilities(e.bucket_choice) * buckets.size).sum())
        phases["aggregate"] = K * mean_len * u[f"aggregate_sparse_float_{e.bucket_size}"] / (R if s.sharded else 1)
    else:
        phases["evaluate"] = math.ceil(N / R) * (u["offspring"] if e.mode == "minibatch" else u["offspring_subset"])
        phases["aggregate"] = K * (P / R if s.sharded else P) * u["aggregate_float"]
    phases["communicate"] = (s.network.time("allgatherv", R, 8 * N) + s.network.time("allreduce", R)
                             + (s.network.time("allgatherv", R, 4 * P) if s.sharded else 0.0))
    phases["update"] = (P / R if s.sharded else P) * u["adam_float"]  # sharded: each rank its slice


def _limited_evaluate(s, buckets, K, notes):
    """Seconds of the slowest rank's limited offspring: with delta evaluation in mini-batch
    mode, the node's shared base pass plus the rank's deal; in no-mini-batch mode a base pass
    per pair's subset; without delta evaluation a full forward pass per offspring."""
    from hpc_es import limited
    e, u, R = s.cfg.es, s.u, s.ranks
    size, share = e.bucket_size, math.ceil(e.n_offspring / R)
    if e.delta and e.mode == "minibatch":
        # the base pass once per node, its blocks of images shared by the node's ranks
        blocks = math.ceil(s.cfg.data.batch_size / limited.BASE_BLOCK)
        base = u[f"base_pass_{size}"] * math.ceil(blocks / min(s.rpn, blocks)) / blocks
        per_tensor = u.get(f"limited_tensor_{size}")
        if per_tensor and e.delta_batch:  # the slowest rank's deal of buckets, not the mean's
            return base + slowest_share(per_tensor, s.net, buckets, e.bucket_choice, K, R, s.cfg.data.batch_size,
                                        e.antithetic)
        notes.append(f"the units have no limited_tensor_{size}: every rank priced at the mean offspring, "
                     f"without the slowest rank's extra convolution buckets")
        return base + share * u[f"limited_offspring_{size}"]
    if e.delta:  # no-mini-batch: a base pass per antithetic pair's subset, on every rank
        bases = min(share, math.ceil(K / R) + 1)
        return share * u[f"limited_offspring_{size}"] + bases * u[f"base_pass_{size}"]
    # a full forward pass per offspring (only the bucket is perturbed and restored)
    return share * u["offspring" if e.mode == "minibatch" else "offspring_subset"]


def _first_order(s, phases, notes, rhos):
    """First-order ES (ours): one backward pass on every rank and ceil(K/R) directional
    derivatives (dense or per bucket), their Allgatherv, then ES's aggregation and update."""
    e, u, R, P = s.cfg.es, s.u, s.ranks, s.P
    K = e.n_offspring // 2 if e.antithetic else e.n_offspring
    if e.perturbation == "limited":
        from hpc_es import limited
        buckets = limited.partition(s.net.layout, e.bucket_size)
        floats = float((buckets.probabilities(e.bucket_choice) * buckets.size).sum())
        dir_key, agg_key = f"directional_sparse_float_{e.bucket_size}", f"aggregate_sparse_float_{e.bucket_size}"
    else:
        dir_key, agg_key, floats = "directional_float", "aggregate_float", P
    if dir_key not in u:  # a units file measured before first-order ES
        notes.append(f"the units have no {dir_key}: the directional derivatives are priced at the "
                     f"aggregation's per-float cost ({agg_key}); `hpc-es plan --save-units` measures both")
    phases["evaluate"] = u["sgd_step"] + math.ceil(K / R) * floats * u.get(dir_key, u[agg_key])
    phases["aggregate"] = K * floats * u[agg_key] / (R if s.sharded else 1)
    phases["communicate"] = (s.network.time("allgatherv", R, 8 * K) + s.network.time("allreduce", R)
                             + (s.network.time("allgatherv", R, 4 * P) if s.sharded else 0.0))
    phases["update"] = (P / R if s.sharded else P) * u["adam_float"]


def _gradient(s, phases, notes, rhos):
    """SGD and the proxy: every rank computes the same gradient (and the proxy its noise)."""
    u, P = s.u, s.P
    phases["evaluate"] = u["sgd_step"]
    phases["update"] = P * u["adam_float"] + (P * u["proxy_float"] if s.cfg.run.method == "proxy" else 0.0)
    phases["communicate"] = s.network.time("allreduce", s.ranks)
    if s.ranks > 1 and not rhos:
        notes.append("SGD and the proxy compute the same gradient on every rank: more ranks only split validation")


_METHODS = {"es": _es, "es_first_order": _first_order, "sgd": _gradient, "proxy": _gradient}


def _measurements(s, phases):
    """The measurements' backward passes: g_true on rank 0 (first-order ES has it already), the
    self-correlation's two on ranks 1 and 2 % R; everyone waits for the busiest at the next
    collective. Their transfers: the second self-correlation gradient to the first's rank, and a
    sharded g gathered for rho."""
    from hpc_es.config import ES_METHODS
    cfg, R = s.cfg, s.ranks
    passes = [0] * min(R, 3)
    if cfg.measure.correlation and cfg.run.method != "es_first_order":
        passes[0] += 1
    if cfg.measure.sgd_self_correlation:
        passes[1 % R] += 1
        passes[2 % R] += 1
        if R > 1:
            phases["communicate"] += s.network.time("allgatherv", 2, 4 * s.P)
    phases["measure"] += max(passes) * s.u["sgd_step"]
    if cfg.measure.correlation and cfg.run.method in ES_METHODS and s.sharded:
        phases["communicate"] += s.network.time("allgatherv", R, 4 * s.P)


def paper_scale():
    """The paper-scale presets (``*_paper``), whose costs the report and the benchmarks project."""
    from hpc_es import config
    return [name for name in config.presets() if name.endswith("_paper")]


JOBS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs", "slurm")


def job_script(preset):
    """(path, {"ntasks": ranks, "runs": array tasks}) of the Slurm script of ``preset`` in this
    checkout (path None and {} where there is none, e.g. an installed package)."""
    path = os.path.join(JOBS, f"{preset}.sbatch")
    header = {}
    if not os.path.exists(path):
        return None, header
    with open(path) as f:
        for line in f:
            if line.startswith("#SBATCH --ntasks="):
                header["ntasks"] = int(line.split("=", 1)[1])
            elif line.startswith("#SBATCH --array="):
                lo, hi = line.split("=", 1)[1].split("%")[0].strip().split("-")
                header["runs"] = int(hi) - int(lo) + 1
    return path, header


def full_scale(presets, units, network=None, table1_runs=20, rhos=(0.04, 0.2)):
    """Per paper-scale preset, as its job script runs it (ranks and array size from the
    script's header): [(preset, script, ranks, runs, Prediction of one run, core-hours of all)]."""
    from hpc_es import config, kinds
    rows = []
    for name in presets:
        cfg = config.load(name)
        script, header = job_script(name)
        ranks = header.get("ntasks", 1)
        if kinds.of(cfg.to_dict()).arms:
            p = predict(cfg, ranks, units, network, runs=table1_runs, rhos=rhos)
            rows.append((name, script, ranks, table1_runs * (1 + len(rhos)), p, p.core_hours))
        else:
            runs = header.get("runs", 1)
            p = predict(cfg, ranks, units, network)
            rows.append((name, script, ranks, runs, p, runs * p.core_hours))
    return rows


def describe(prediction, network):
    """Lines for ``hpc-es plan``."""
    p = prediction
    unit = kinds.of(p.config).unit  # a population's iterations are blocks of offspring
    lines = [f"{p.ranks:,} ranks ({p.ranks_per_node} per node), {p.iterations:,} {unit}s",
             f"per {unit}: " + ", ".join(f"{k} {_s(v)}" for k, v in p.phases.items() if v) +
             f" = {_s(p.per_iteration)}",
             f"start-up {_s(p.startup)}, checkpoint and results writes {_s(p.writes)}",
             f"wall time {hms(p.wall)}, {p.core_hours:,.1f} core-hours, memory per node "
             f"{p.memory_per_node / 2**30:.2f} GiB",
             f"collectives: {network.source}"]
    return lines + [f"note: {n}" for n in p.notes]


def _s(seconds):
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def hms(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"
