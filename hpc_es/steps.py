"""One iteration's gradient, per method: the step objects the training loop calls.

Each step has ``gradient(theta, t, out, timer)``: it writes iteration t's *descent* direction
of the loss into ``out`` (P,) on every rank alike and returns the iteration's record
(``loss``, ``reward_std`` and, when measured, ``rho``...). ``timer`` (:class:`PhaseTimer`)
receives the seconds of each phase. The loop (:mod:`hpc_es.train`) then only updates,
validates, logs and checkpoints, whatever the method.

  SGDStep         exact gradient of the mini-batch of stream DATA_STREAM (+ L2)
  ProxyStep       Sec. 4's ES proxy: that gradient plus Gaussian noise at correlation rho
  ESStep          OpenAI-ES, Eq. (1): evaluate this rank's share of offspring, Allgatherv the
                  rewards, aggregate g_ES (sharded over the ranks: one Allgatherv of P floats)
  LimitedESStep   ES with limited perturbation (Sec. 4.1): buckets, delta evaluation
  FirstOrderESStep  first-order ES (ours): ES's population, each reward replaced by its
                  first-order value from one backward pass; only K derivatives travel

With ``measure.correlation`` / ``measure.sgd_self_correlation``, rank 0 measures the estimate
against the exact gradient of the same mini-batch (never used by the optimizer).
"""
import contextlib
import logging
import socket
import time

import numpy as np

from hpc_es import analysis, comm as comm_mod, config, es, faults, io, limited

log = logging.getLogger(__name__)

PHASES = ("seconds_evaluate", "seconds_communicate", "seconds_aggregate", "seconds_update",
          "seconds_measure", "seconds_validate", "seconds_total")


class PhaseTimer:
    """Seconds per phase of one iteration: ``with timer("evaluate"): ...`` adds to
    ``seconds_evaluate``; :attr:`seconds` has every phase of :data:`PHASES`, 0 where unused."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, phase):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds["seconds_" + phase] += time.perf_counter() - t0

    def total(self):
        """The phases, with ``seconds_total`` = wall time since this timer was made."""
        return {**self.seconds, "seconds_total": time.perf_counter() - self._start}


def build(cfg, comm, net, dataset, table):
    """The step of ``cfg.run.method`` (sgd, proxy, es) and ``es.perturbation`` (full, limited)."""
    method = cfg.run.method
    if method == "sgd":
        return SGDStep(cfg, comm, net, dataset)
    if method == "proxy":
        return ProxyStep(cfg, comm, net, dataset)
    if method == "es":
        cls = LimitedESStep if cfg.es.perturbation == "limited" else ESStep
        return cls(cfg, comm, net, dataset, table)
    if method == "es_first_order":
        return FirstOrderESStep(cfg, comm, net, dataset, table)
    raise ValueError(f"run.method {method!r}: no training step (expected sgd, proxy, es or es_first_order)")


def check_finite(values, t, cfg, what):
    """Raise FloatingPointError naming iteration t and the likely culprit if ``values`` are not
    all finite (the values are identical on every rank, so every rank raises alike)."""
    if not np.isfinite(values).all():
        hint = (f"es.sigma = {cfg.es.sigma} or optim.lr = {cfg.optim.lr} is likely too large"
                if cfg.run.method in config.ES_METHODS else f"optim.lr = {cfg.optim.lr} is likely too large")
        raise FloatingPointError(f"iteration {t + 1}: non-finite {what}; {hint}. The last checkpoint "
                                 f"is kept; resume from it with a smaller value and --force into a new --out")


class SGDStep:
    """The SGD control: the exact gradient of iteration t's mini-batch (identical on every rank)."""

    def __init__(self, cfg, comm, net, dataset):
        self.cfg, self.net, self.comm, self.rank = cfg, net, comm, comm.Get_rank()
        self.x, self.y = dataset.train_images, dataset.train_labels

    def describe(self):
        return ""

    def minibatch(self, t):
        return es.minibatch(self.cfg.run.seed, t, len(self.y), self.cfg.data.batch_size)

    def optimizer(self, opt):
        """The optimizer the loop steps with (this step's own form of ``opt``: here ``opt``)."""
        return opt

    def close(self):
        """Collective: release what the step holds across ranks (a node-shared cache)."""

    def update(self, opt, theta, grad, timer):
        """theta <- the optimizer's step with the descent direction ``grad`` (every rank alike)."""
        with timer("update"):
            opt.step(theta, grad)

    def gradient(self, theta, t, out, timer):
        batch = self.minibatch(t)
        with timer("evaluate"):
            loss, _ = self.net.loss_and_grad(theta, self.x[batch], self.y[batch], self.cfg.optim.l2, out=out)
        check_finite(np.array([loss]), t, self.cfg, "loss")
        rec = {"loss": loss, "reward_std": 0.0}
        with timer("measure"):
            rec.update(self.measure(theta, t, batch, out, sign=1.0, g_true=None))
        return rec

    def measure(self, theta, t, batch, g_est, sign, g_true):
        """The measurements of iteration t (see module doc), on rank 0; {} elsewhere or when off.
        Collective: every rank calls it.

        ``g_est`` is the estimate used this iteration (complete on rank 0), ``sign`` the sign
        that turns the loss gradient into its direction (-1 for g_ES, an ascent direction of
        the reward), and ``g_true`` the exact loss gradient of the mini-batch if already
        computed. The backward passes are spread: g_true on rank 0, the self-correlation's two
        gradients on ranks 1 and 2 (as many as there are; the second is sent to the first).
        """
        cfg = self.cfg
        rec = {}
        if cfg.measure.sgd_self_correlation:
            value = self._self_correlation(theta, t)
            if self.rank == 0:
                rec["rho_sgd_self"] = value
        if self.rank != 0:
            return rec
        net, x, y = self.net, self.x, self.y
        if cfg.measure.correlation:
            if g_true is None:
                g_true = net.grad(theta, x[batch], y[batch])  # the cross-entropy's gradient, no L2
            g_true = g_true if sign > 0 else -g_true
            rec["rho"] = analysis.pearson(g_est, g_true)
            for name, rho in analysis.layer_correlations(net, g_est, g_true).items():
                rec[f"rho_{name}"] = rho
            for name, share in analysis.layer_shares(net, g_true).items():
                rec[f"gshare_{name}"] = share
            rec.update(self.theory(g_true))
        return rec

    def _self_correlation(self, theta, t):
        """rho of the loss gradients on two independent random mini-batches of iteration t
        (stream SELF_STREAM), the first computed on rank 1 % R and the second on rank 2 % R;
        the value reaches every rank."""
        cfg, net, x, y, size = self.cfg, self.net, self.x, self.y, self.comm.Get_size()
        rng = es.stream(cfg.run.seed, t, es.SELF_STREAM)
        b1, b2 = (rng.choice(len(y), cfg.data.batch_size, replace=False) for _ in range(2))
        first, second = 1 % size, 2 % size
        g1 = net.grad(theta, x[b1], y[b1]).copy() if self.rank == first else None
        g2 = net.grad(theta, x[b2], y[b2]) if self.rank == second else None
        inbox = np.empty(net.n_params, np.float32) if self.rank == first != second else None
        g2 = comm_mod.move(self.comm, g2, second, first, inbox)
        value = analysis.pearson(g1, g2) if self.rank == first else None
        return self.comm.bcast(value, root=first)

    def theory(self, g_true):
        """What our theory expects rho to be this iteration, given g_true ({}: no estimate)."""
        return {}


class ProxyStep(SGDStep):
    """Sec. 4's ES proxy: g_true + m g_noise with rho(g_proxy, g_true) = proxy.rho, at SGD cost;
    g_noise from stream PROXY_STREAM of iteration t. With ``proxy.rho_from`` (ours), iteration t
    takes the rho an ES run measured at its iteration t (read on rank 0, shared), and records it
    as ``rho_target``."""

    def __init__(self, cfg, comm, net, dataset):
        super().__init__(cfg, comm, net, dataset)
        self.g_true = np.empty(net.n_params, np.float32)
        self.schedule = None
        if cfg.proxy.rho_from:
            self.schedule = comm_mod.from_root(
                comm, lambda: io.load_rho_schedule(cfg.proxy.rho_from, cfg.run.iterations), io.RunDirError)

    def describe(self):
        if self.schedule is None:
            return f", rho = {self.cfg.proxy.rho}"
        s = self.schedule
        return (f", rho per iteration from {self.cfg.proxy.rho_from} (mean {100 * s.mean():.3g}%, "
                f"{100 * s.min():.3g}-{100 * s.max():.3g}%)")

    def rho(self, t):
        """The correlation the proxy is built for at iteration t."""
        return self.cfg.proxy.rho if self.schedule is None else float(self.schedule[t])

    def gradient(self, theta, t, out, timer):
        batch = self.minibatch(t)
        with timer("evaluate"):
            loss, _ = self.net.loss_and_grad(theta, self.x[batch], self.y[batch], self.cfg.optim.l2, out=self.g_true)
        check_finite(np.array([loss]), t, self.cfg, "loss")
        with timer("aggregate"):
            g_noise = es.stream(self.cfg.run.seed, t, es.PROXY_STREAM).standard_normal(self.net.n_params, np.float32)
            analysis.proxy_gradient(self.g_true, self.rho(t), g_noise, out)
        rec = {"loss": loss, "reward_std": 0.0}
        if self.schedule is not None:
            rec["rho_target"] = self.rho(t)
        with timer("measure"):
            rec.update(self.measure(theta, t, batch, out, sign=1.0, g_true=self.g_true))
        return rec


class ShardedOptimizer:
    """An optimizer over one rank's slice [lo, hi) of theta: its state (Adam's m and v) is 1/R
    of the replicated one, and so is the work of a step; the elementwise update gives the same
    bits as the replicated optimizer on that slice. Built from the session's optimizer (full
    state, e.g. loaded from a checkpoint: each rank keeps its slice). :meth:`state` is
    collective: the slices are gathered on rank 0 (the only writer of checkpoints), so a run
    resumes on any rank count; :meth:`replicated_state` is what every rank holds alike (the
    step count), for the drift check."""

    def __init__(self, opt, comm, lo, hi, counts):
        self.comm, self.lo, self.hi, self.counts = comm, lo, hi, counts
        self.n_params = int(counts.sum())
        self.local = opt.slice(lo, hi)

    @property
    def step_count(self):
        return self.local.step_count

    def step(self, theta, grad):
        self.local.step(theta[self.lo:self.hi], grad[self.lo:self.hi])

    def state(self):
        """Collective: the full state on rank 0 (arrays of P), this rank's slices elsewhere."""
        out = {}
        for key, value in self.local.state().items():
            if isinstance(value, np.ndarray) and value.ndim == 1 and value.size == self.hi - self.lo:
                whole = np.empty(self.n_params, value.dtype) if self.comm.Get_rank() == 0 else value
                out[key] = comm_mod.gatherv(self.comm, value, whole, self.counts)
            else:
                out[key] = value
        return out

    def replicated_state(self):
        return {"step_count": np.array(self.local.step_count)}


class ESStep(SGDStep):
    """OpenAI-ES (Eq. 1 and 2): this rank evaluates offspring [lo, hi) of the population drawn
    from (seed, t); the rewards are gathered; g_ES is aggregated over the noise table, each rank
    its slice of theta when sharded; the descent direction is -g_ES (+ L2, known exactly)."""

    def __init__(self, cfg, comm, net, dataset, table):
        super().__init__(cfg, comm, net, dataset)
        self.comm, self.table = comm, table.array
        rank, size = comm.Get_rank(), comm.Get_size()
        n = cfg.es.n_offspring
        self.lo, self.hi = comm_mod.split_range(n, rank, size)
        self.counts = comm_mod.share_counts(n, size)
        self.mine, self.gathered = np.empty(self.hi - self.lo, np.float64), np.empty(n, np.float64)
        self.work = np.empty(net.n_params, np.float32)
        self.sharded = cfg.es.aggregation == "sharded" and size > 1
        self.g_lo, self.g_hi = comm_mod.split_range(net.n_params, rank, size) if self.sharded else (0, net.n_params)
        self.g_counts = comm_mod.share_counts(net.n_params, size)
        self.buckets = self.delta = None
        self.g_true = None  # the loss gradient of the mini-batch where a step computes it anyway

    def describe(self):
        e = self.cfg.es
        return f", N = {e.n_offspring}, sigma = {e.sigma}, {e.mode}"

    def theory(self, g_true):
        """sqrt(n / (n + P + 1)) overall and the per-layer form (``analysis.expected_layer_rho``),
        n antithetic pairs (full perturbation; none without antithetic sampling)."""
        if not self.cfg.es.antithetic:
            return {}
        n = self.cfg.es.n_offspring // 2
        layers = analysis.expected_layer_rho(g_true, analysis.layer_slices(self.net), n)
        return {"rho_theory": float(analysis.expected_rho(n, self.net.n_params)),
                **{f"rho_theory_{name}": rho for name, rho in layers.items()}}

    def evaluate(self, theta, t):
        """This rank's share of iteration t into ``self.mine``; returns (population, None), or
        (population or None, a one-line description) if evaluating raised here. A failing rank
        still joins the Allgatherv that follows, with NaN values: its failure then travels with
        them, and every rank stops together instead of waiting for it."""
        cfg = self.cfg
        pop = None
        try:
            pop = es.sample_population(cfg.es, cfg.run.seed, t, self.net.n_params, cfg.noise.size, len(self.y),
                                       cfg.data.batch_size, self.buckets)
            self.evaluate_share(theta, t, pop)
            return pop, None
        except Exception as err:  # noqa: BLE001 - any failure here must reach every rank
            log.debug("rank %d: evaluating iteration %d failed", self.rank, t + 1, exc_info=True)
            self.mine.fill(np.nan)
            return pop, (f"rank {self.rank} on {socket.gethostname()}: evaluating iteration {t + 1} failed: "
                         f"{comm_mod.describe_failure(err)}")

    def evaluate_share(self, theta, t, pop):
        """The rewards of this rank's offspring [lo, hi) into ``self.mine``."""
        cfg, lo, hi = self.cfg, self.lo, self.hi
        # The reliability tests can stop a rank half-way through its share (faults.point).
        mid = (lo + hi) // 2 if faults.armed() else hi
        es.evaluate(self.net, theta, self.table, pop, cfg.es.sigma, self.x, self.y, lo, mid, self.mine,
                    self.work, self.delta)
        faults.point("evaluate", t + 1, self.rank)
        es.evaluate(self.net, theta, self.table, pop, cfg.es.sigma, self.x, self.y, mid, hi,
                    self.mine[mid - lo:], self.work, self.delta)

    def rewards_of(self, pop):
        """Every offspring's reward (N,), from what the ranks gathered into ``self.gathered``."""
        return self.gathered

    def gradient(self, theta, t, out, timer):
        cfg = self.cfg
        with timer("evaluate"):
            pop, failure = self.evaluate(theta, t)
        with timer("communicate"):
            comm_mod.allgatherv(self.comm, self.mine, self.gathered, self.counts)
        if not np.isfinite(self.gathered).all():  # every rank sees it: agree on why, together
            failures = [f for f in self.comm.allgather(failure) if f]
            if failures:
                raise comm_mod.RankFailure("; ".join(failures))
        rewards = self.rewards_of(pop)
        check_finite(rewards, t, cfg, "rewards")
        with timer("aggregate"):
            es.gradient(self.table, pop, es.fitness(rewards, cfg.es.fitness), cfg.es.sigma, out,
                        self.g_lo, self.g_hi)
        lo, hi = self.g_lo, self.g_hi
        if self.sharded and cfg.measure.correlation:  # only the measuring rank needs all of g
            with timer("communicate"):
                comm_mod.gatherv(self.comm, out[lo:hi], out, self.g_counts)
        rec = {"loss": -float(rewards.mean()), "reward_std": float(rewards.std())}
        with timer("measure"):
            rec.update(self.measure(theta, t, pop.batch, out, sign=-1.0, g_true=self.g_true))
        with timer("update"):
            np.negative(out[lo:hi], out=out[lo:hi])  # the optimizers descend the loss = -reward
            # as OpenAI's ES: L2's gradient is known exactly
            self.net.add_l2_grad(theta, cfg.optim.l2, out, lo, hi)
        return rec

    def optimizer(self, opt):
        """Sharded: each rank keeps the optimizer state of its slice of theta only (:class:`ShardedOptimizer`)."""
        return ShardedOptimizer(opt, self.comm, self.g_lo, self.g_hi, self.g_counts) if self.sharded else opt

    def update(self, opt, theta, grad, timer):
        """Sharded: the optimizer's step on this rank's slice of theta (its slice of g is all it
        computed), then one Allgatherv of theta (P floats: what the gather of g cost before)."""
        if not self.sharded:
            return super().update(opt, theta, grad, timer)
        with timer("update"):
            opt.step(theta, grad)
        with timer("communicate"):
            comm_mod.allgatherv(self.comm, theta[self.g_lo:self.g_hi], theta, self.g_counts)


class LimitedESStep(ESStep):
    """ES with limited perturbation (Sec. 4.1): each antithetic pair perturbs one bucket of
    <= es.bucket_size parameters (:mod:`hpc_es.limited`), evaluated from cached activations."""

    def __init__(self, cfg, comm, net, dataset, table):
        super().__init__(cfg, comm, net, dataset, table)
        self.buckets = limited.partition(net.layout, cfg.es.bucket_size)
        self.delta = limited.DeltaEvaluator(net, cfg.es.delta_batch) if cfg.es.delta else None
        self.node_cache = None
        if self.delta is not None and cfg.es.delta_batch and cfg.es.mode == "minibatch" and comm.Get_size() > 1:
            # one cache per node, each of its ranks computing a share of the base pass
            # (collective over comm, as the noise table's allocation)
            batch = cfg.data.batch_size
            nbytes = limited.DeltaEvaluator(net).share_cache(batch, np.float32, lambda n: np.empty(n, np.uint8))
            shared = comm_mod.SharedArray(comm, -(-nbytes // 4))
            if shared.comm.Get_size() > 1:
                self.delta.share_cache(batch, np.float32, lambda n: shared.array.view(np.uint8)[:n])
                self.node_cache = shared
            else:
                shared.free()
        # batched delta evaluation on a shared mini-batch: offspring dealt to ranks by cost
        self.balanced = (self.delta is not None and cfg.es.delta_batch and cfg.es.mode == "minibatch")
        if self.balanced:
            layers = net.layers
            self.tensor_offset = np.array([p.offset for p in net.layout], np.int64)
            self.tensor_layer = np.array([p.layer for p in net.layout], np.int64)
            batch = cfg.data.batch_size  # a bucket's cost: the forward pass from its layer up
            self.layer_cost = np.array([sum(a.flops(batch) for a in layers[i:]) for i in range(len(layers))],
                                       np.float64)
            k = cfg.es.n_offspring // 2 if cfg.es.antithetic else cfg.es.n_offspring
            self.counts, _ = es.deal(np.zeros(k), comm.Get_size(), cfg.es.antithetic)
            self.displ = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
            self.mine = np.empty(self.counts[self.rank], np.float64)

    def evaluate_share(self, theta, t, pop):
        """Batched delta evaluation: this rank's share of a cost-balanced deal of the offspring
        (:func:`hpc_es.es.deal`: the perturbations whose bucket lies lowest in the net, whose
        layers above all run again, spread evenly), on the node's shared base pass where the
        node has several ranks; otherwise offspring [lo, hi) as ES."""
        if not self.balanced:
            return super().evaluate_share(theta, t, pop)
        size = self.comm.Get_size()
        counts, order = es.deal(self.layer_cost[self.layer_of(pop.start)], size, self.cfg.es.antithetic)
        self.order = order
        mine = order[self.displ[self.rank]:self.displ[self.rank] + counts[self.rank]]
        based = self.node_cache is not None
        if based:
            node = self.node_cache.comm
            b = pop.batch
            try:  # this rank's share of the node's base pass, then the node waits for all shares
                self.delta.set_base(theta, self.x[b], self.y[b], part=(node.Get_rank(), node.Get_size()))
            finally:  # a rank that failed still arrives: the others must not wait for it
                node.Barrier()
            # the next write to the cache is the next iteration's, after the rewards' Allgatherv:
            # no rank of the node is still reading it then
        es.check_population(pop, self.net.n_params, self.table.size)
        cfg, n = self.cfg, mine.size
        mid = n // 2 if faults.armed() else n
        es.evaluate_limited_set(theta, self.table, pop, cfg.es.sigma, self.x, self.y, mine[:mid], self.mine,
                                self.delta, based)
        faults.point("evaluate", t + 1, self.rank)
        es.evaluate_limited_set(theta, self.table, pop, cfg.es.sigma, self.x, self.y, mine[mid:],
                                self.mine[mid:], self.delta, based)

    def rewards_of(self, pop):
        if not self.balanced:
            return self.gathered
        rewards = np.empty_like(self.gathered)
        rewards[self.order] = self.gathered
        return rewards

    def layer_of(self, starts):
        """The layer of the bucket starting at each of ``starts``."""
        return self.tensor_layer[np.searchsorted(self.tensor_offset, starts, side="right") - 1]

    def close(self):
        if self.node_cache is not None:
            self.node_cache.free()
            self.node_cache = None

    def describe(self):
        return super().describe() + f", limited to buckets of <= {self.cfg.es.bucket_size}"

    def theory(self, g_true):
        """The limited estimator's expected rho (``limited.expected_correlation``), overall."""
        e = self.cfg.es
        n = e.n_offspring // 2 if e.antithetic else e.n_offspring
        return {"rho_theory": limited.expected_correlation(g_true, self.buckets, e.bucket_choice, n)[0]}


class FirstOrderESStep(ESStep):
    """First-order ES (ours, see :mod:`hpc_es.es`): the population of :class:`ESStep` (or of
    :class:`LimitedESStep`), but each offspring's reward replaced by its first-order value
    -L(theta) - sign_i sigma eps_i . grad L(theta). Every rank computes grad L of the shared
    mini-batch (one backward pass), then the directional derivatives of its share [klo, khi)
    of the K perturbations; the ranks Allgatherv those K floats (as ES does its N rewards),
    and fitness shaping, aggregation, L2 and the measurements are ES's own."""

    def __init__(self, cfg, comm, net, dataset, table):
        super().__init__(cfg, comm, net, dataset, table)
        if cfg.es.mode != "minibatch":
            raise ValueError("run.method = 'es_first_order' needs es.mode = 'minibatch'")  # config refuses it first
        k = cfg.es.n_offspring // 2 if cfg.es.antithetic else cfg.es.n_offspring
        rank, size = comm.Get_rank(), comm.Get_size()
        self.klo, self.khi = comm_mod.split_range(k, rank, size)
        self.counts = comm_mod.share_counts(k, size)
        self.mine, self.gathered = np.empty(self.khi - self.klo, np.float64), np.empty(k, np.float64)
        self.g_true, self.loss0 = np.empty(net.n_params, np.float32), None
        self.work = None  # no perturbed copy of theta is ever made
        if cfg.es.perturbation == "limited":
            self.buckets = limited.partition(net.layout, cfg.es.bucket_size)

    def describe(self):
        limited_text = (f", limited to buckets of <= {self.cfg.es.bucket_size}"
                        if self.buckets is not None else "")
        return super().describe() + limited_text + ", first-order rewards"

    def theory(self, g_true):
        if self.buckets is not None:
            return LimitedESStep.theory(self, g_true)
        return super().theory(g_true)

    def evaluate_share(self, theta, t, pop):
        """grad L of the mini-batch (every rank alike), then eps_k . grad L for k in [klo, khi)."""
        b = pop.batch
        self.loss0, _ = self.net.loss_and_grad(theta, self.x[b], self.y[b], 0.0, out=self.g_true)
        faults.point("evaluate", t + 1, self.rank)
        es.directional_derivatives(self.table, pop, self.g_true, self.klo, self.khi, self.mine)

    def rewards_of(self, pop):
        # The reward is -L: its value at theta is -loss0, its directional derivative -eps . grad L.
        return es.first_order_rewards(-self.loss0, -self.gathered, pop, self.cfg.es.sigma)
