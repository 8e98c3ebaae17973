"""The distributed training loop: same theta on 1 and 2 ranks, exact resume, refusals.

Run serially and under ``mpiexec -n 2`` (marker ``mpi``). Exact (bitwise) equality is the
right tolerance here: every offspring's reward is computed by the same code on the same
inputs whichever rank evaluates it, every rank aggregates the full reward vector in the same
order, and nothing crosses ranks in floating point except the gathered rewards themselves
(validation sums integer counts).
"""
import os

import numpy as np
import pytest

from hpc_es import comm, config, data, io, train

ES_TINY = ["run.method=es", "es.n_offspring=12", "noise.size=200000", "run.iterations=4", "run.eval_every=2",
           "run.checkpoint_every=2", "run.log_every=1"]


@pytest.fixture(scope="module")
def world():
    return comm.world()


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load_mnist(mnist_dir)


@pytest.fixture
def shared_tmp(world, tmp_path):
    """A temporary directory made on rank 0 and shared with every rank."""
    path = world.bcast(str(tmp_path), root=0)
    yield path
    world.Barrier()


def _cfg(*extra):
    return config.load("es_small_local", ES_TINY + list(extra))


@pytest.mark.mpi(min_size=2)  # on one rank "all ranks" and "serial" are the same run
@pytest.mark.parametrize("extra", [[], ["es.aggregation=replicated"],
                                   ["es.mode=nominibatch", "es.fitness=centered_ranks", "optim.l2=0.0002"],
                                   ["es.perturbation=limited", "es.bucket_size=2000"],
                                   ["es.perturbation=limited", "es.bucket_size=3000", "es.mode=nominibatch",
                                    "es.bucket_choice=size", "es.aggregation=replicated"],
                                   ["run.method=sgd"],
                                   ["run.method=es_first_order", "es.n_offspring=14"],
                                   ["run.method=es_first_order", "es.perturbation=limited", "es.bucket_size=2000",
                                    "es.fitness=centered_ranks", "optim.l2=0.0002", "es.bucket_choice=size"],
                                   ["run.method=es_first_order", "es.antithetic=false", "es.n_offspring=7",
                                    "es.aggregation=replicated"]],
                         ids=["es", "es-replicated", "es-nominibatch-ranks-l2", "limited", "limited-nominibatch",
                              "sgd", "first-order", "first-order-limited-ranks-l2", "first-order-plain"])
def test_all_ranks_and_a_serial_run_reach_the_same_theta(world, mnist, extra):
    cfg = _cfg(*extra)
    theta_mpi, hist = train.run(cfg, world, dataset=mnist, quiet=True)
    theta_serial, hist_serial = train.run(cfg, comm.SerialComm(), dataset=mnist, quiet=True)
    gathered = world.allgather(theta_mpi.tobytes())
    comm.parallel_assert(world, all(g == gathered[0] for g in gathered), "ranks hold different theta")
    comm.parallel_assert(world, np.array_equal(theta_mpi, theta_serial),
                         f"{world.Get_size()} ranks vs serial: max |diff| "
                         f"{np.abs(theta_mpi - theta_serial).max()}")
    comm.parallel_assert(world, hist["val_accuracy"] == hist_serial["val_accuracy"], "validation differs")


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["es", "es_first_order"])
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(world, mnist, shared_tmp, method):
    full, part = os.path.join(shared_tmp, "full"), os.path.join(shared_tmp, "part")
    theta_full, hist_full = train.run(_cfg(f"run.method={method}"), world, out=full, dataset=mnist, quiet=True)
    train.run(_cfg(f"run.method={method}", "run.iterations=2"), world, out=part, dataset=mnist, quiet=True)
    theta_resumed, hist = train.run(_cfg(f"run.method={method}"), world, out=part, resume=True, dataset=mnist,
                                    quiet=True)
    comm.parallel_assert(world, np.array_equal(theta_full, theta_resumed), "resumed theta differs")
    comm.parallel_assert(world, hist["loss"] == hist_full["loss"], "resumed loss history differs")
    res = io.read_results(os.path.join(part, io.RESULTS))
    comm.parallel_assert(world, np.array_equal(res["theta"], theta_full) and
                         list(res["history"]["iteration"]) == [1, 2, 3, 4] and
                         res["completed_iterations"] == 4 and res["ranks"] == world.Get_size(),
                         "results file incomplete")


@pytest.mark.mpi(min_size=2)
def test_sharded_update_and_spread_measurements_match_one_rank(world, mnist, shared_tmp):
    """Sharded ES: each rank keeps Adam's state for its slice only; the checkpoint gathers it
    whole (equal to one rank's); the measurements, computed on different ranks (g_true on rank
    0, the self-correlation's gradients on ranks 1 and 2 % R), equal one rank's."""
    extra = ["measure.correlation=true", "measure.sgd_self_correlation=true", "optim.l2=0.0002"]
    out = os.path.join(shared_tmp, "sharded")
    theta, hist = train.run(_cfg(*extra), world, out=out, dataset=mnist, quiet=True)
    serial_out = os.path.join(shared_tmp, "serial") if world.Get_rank() == 0 else None
    if world.Get_rank() == 0:
        theta_1, hist_1 = train.run(_cfg(*extra), comm.SerialComm(), out=serial_out, dataset=mnist, quiet=True)
        ours, one = io.load_checkpoint(out), io.load_checkpoint(serial_out)
        assert np.array_equal(theta, theta_1)
        for key in ("m", "v", "step_count"):
            assert np.array_equal(ours["optimizer"][key], one["optimizer"][key]), key
        for key in ("rho", "rho_fc1", "rho_sgd_self", "gshare_conv1"):
            assert hist[key] == hist_1[key], key
    world.Barrier()


@pytest.mark.mpi
def test_refusals_happen_on_every_rank_before_work(world, mnist, shared_tmp):
    out = os.path.join(shared_tmp, "run")
    train.run(_cfg("run.iterations=2"), world, out=out, dataset=mnist, quiet=True)
    with pytest.raises(io.RunDirError, match=r"holds another run \(results.h5, checkpoint.h5\); pass --resume"):
        train.run(_cfg(), world, out=out, dataset=mnist, quiet=True)
    with pytest.raises(config.ConfigError, match=r"es.sigma: 0.002 -> 0.01; optim.lr: 0.001 -> 0.002"):
        train.run(_cfg("es.sigma=0.01", "optim.lr=0.002"), world, out=out, resume=True, dataset=mnist, quiet=True)
    with pytest.raises(io.RunDirError, match=r"no checkpoint to resume from"):
        train.run(_cfg(), world, out=os.path.join(shared_tmp, "empty"), resume=True, dataset=mnist, quiet=True)
    # --force replaces the old run.
    train.run(_cfg("run.iterations=1"), world, out=out, force=True, dataset=mnist, quiet=True)
    res = io.read_results(os.path.join(out, io.RESULTS))
    comm.parallel_assert(world, res["completed_iterations"] == 1, "--force did not replace the run")


@pytest.mark.mpi
def test_nan_loss_stops_with_iteration_and_hint_keeping_the_checkpoint(world, mnist, shared_tmp):
    out = os.path.join(shared_tmp, "nan")
    train.run(_cfg("run.iterations=2"), world, out=out, dataset=mnist, quiet=True)
    images = mnist.train_images.astype(np.float32) / 255
    images[:] = np.nan
    poisoned = data.MNIST(images, mnist.train_labels, mnist.test_images, mnist.test_labels, "poisoned")
    with pytest.raises(FloatingPointError, match=r"iteration 3: non-finite rewards; es.sigma = 0.002 or optim.lr"):
        train.run(_cfg(), world, out=out, resume=True, dataset=poisoned, quiet=True)
    comm.parallel_assert(world, io.load_checkpoint(out)["iteration"] == 2, "checkpoint lost")
