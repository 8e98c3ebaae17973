"""Many nodes on one machine: 4 ranks as 2 virtual nodes of 2 (``HPC_ES_RANKS_PER_NODE=2``).

Marker ``nodes``: README's test command runs these under
``HPC_ES_RANKS_PER_NODE=2 mpiexec -n 4 python -m mpi4py -m pytest -m nodes``; anywhere else
they skip. A virtual node is what a real node is to the package (its own shared-memory
communicator and noise-table copy), so these are the multi-node layout's tests: one table
copy per node, filled by that node's ranks; training bit-identical to one rank; a checkpoint
of 4 ranks (2 nodes) resumed on 2 ranks (1 node) and on 3 (nodes of 2 and 1); a data
directory that one node cannot see.
"""
import dataclasses
import hashlib
import os
import shutil

import numpy as np
import pytest

from hpc_es import comm, config, data, io, noise, train
from tests.test_comm import load_data_messages
from tests.test_noise import seen_after_write

pytestmark = pytest.mark.nodes

ES_TINY = ["run.method=es", "es.n_offspring=8", "noise.size=200000", "run.eval_every=0", "run.checkpoint_every=1"]


@pytest.fixture(scope="module")
def world():
    return comm.world()


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    """MNIST with the first 400 test images: validation (split over the ranks) stays in the
    runs, at a 25th of its cost, on a machine where 4 ranks share 2 cores."""
    ds = data.load_mnist(mnist_dir)
    return dataclasses.replace(ds, test_images=ds.test_images[:400], test_labels=ds.test_labels[:400])


def _pss_kib():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def test_one_table_copy_per_virtual_node_filled_by_its_own_ranks(world):
    size = 16 * noise.CHUNK + 777  # 64 MiB, a partial last chunk
    node = comm.node_comm(world)
    comm.parallel_assert(world, node.Get_size() == 2, f"virtual node of {node.Get_size()} ranks, expected 2")
    before = _pss_kib()
    shared = comm.shared_noise_table(world, 3, size)
    shared.array.sum()  # touch every page on every rank
    world.Barrier()
    grew_mib = (_pss_kib() - before) / 1024
    table_mib = size * 4 / 2**20
    # PSS of a node = the sum over its ranks: one table per virtual node (each rank carries half)
    node_mib = sum(node.allgather(grew_mib))
    comm.parallel_assert(world, abs(node_mib - table_mib) < 0.2 * table_mib,
                         f"a virtual node's PSS grew by {node_mib:.0f} MiB, expected one table ({table_mib:.0f})")
    # this node's ranks wrote disjoint ranges that cover the whole table
    ranges = sorted(node.allgather(shared.filled))
    comm.parallel_assert(world, ranges[0][0] == 0 and ranges[-1][1] == size and ranges[0][1] == ranges[1][0],
                         f"the node's ranks filled {ranges} of [0, {size})")
    digest = hashlib.sha256(shared.array.tobytes()).hexdigest()
    serial = hashlib.sha256(noise.build_table(3, size).tobytes()).hexdigest()
    comm.parallel_assert(world, digest == serial, "a node's table differs from the serial build")
    # separate memory: node 0's write is not seen by node 1
    world.Barrier()
    seen, first = seen_after_write(world, shared, world.Get_rank() == 0)
    expected = 12345.0 if world.Get_rank() < 2 else first
    comm.parallel_assert(world, seen == expected, f"rank {world.Get_rank()} saw {seen}, expected {expected}")
    shared.free()
    node.Free()


@pytest.mark.parametrize("extra", [[], ["es.perturbation=limited", "es.bucket_size=2000"], ["run.method=sgd"]],
                         ids=["es", "limited", "sgd"])
def test_two_virtual_nodes_train_bit_identically_to_one_rank(world, mnist, extra):
    cfg = config.load("es_small_local", ES_TINY + ["run.iterations=2"] + extra)
    theta, _ = train.run(cfg, world, dataset=mnist, quiet=True)
    serial, _ = train.run(cfg, comm.SerialComm(), dataset=mnist, quiet=True)
    comm.parallel_assert(world, np.array_equal(theta, serial),
                         f"2 virtual nodes vs 1 rank: max |diff| {np.abs(theta - serial).max()}")


def test_limited_es_keeps_one_base_pass_cache_per_virtual_node_computed_in_shares(world, mnist):
    """The cached activations of theta live once per node; each of its ranks computes a share
    of the blocks of images, and every rank sees the whole cache, equal to one process's."""
    from hpc_es import limited, nets, steps
    cfg = config.load("es_small_local", ES_TINY + ["run.iterations=1", "es.perturbation=limited",
                                                   "es.bucket_size=2000"])
    net = nets.build("small")
    table = comm.shared_noise_table(world, cfg.noise.seed, cfg.noise.size)
    step = steps.build(cfg, world, net, mnist, table)
    node = step.node_cache.comm
    comm.parallel_assert(world, node.Get_size() == 2, "no node-shared cache")
    theta = net.init_theta(0)
    batch = np.arange(50)
    step.delta.set_base(theta, mnist.train_images[batch], mnist.train_labels[batch], part=(node.Get_rank(), 2))
    node.Barrier()
    alone = limited.DeltaEvaluator(net)
    alone.set_base(theta, mnist.train_images[batch], mnist.train_labels[batch])
    same = all(np.array_equal(a.out, b.out) and np.array_equal(a.z, b.z) for a, b in zip(step.delta.cache, alone.cache))
    comm.parallel_assert(world, same, "the node's shared cache differs from one process's")
    addresses = node.allgather(step.delta.cache[0].z.ctypes.data - step.node_cache.array.ctypes.data)
    comm.parallel_assert(world, len(set(addresses)) == 1, f"cache at different places of the window: {addresses}")
    world.Barrier()
    step.close()
    table.free()


def test_a_checkpoint_of_two_nodes_resumes_on_one_node_and_on_three_ranks(world, mnist, tmp_path):
    base = world.bcast(str(tmp_path), root=0)
    rank = world.Get_rank()
    full = config.load("es_small_local", ES_TINY + ["run.iterations=2"])
    reference, _ = train.run(full, comm.SerialComm(), dataset=mnist, quiet=True)
    first = os.path.join(base, "four")
    train.run(config.load("es_small_local", ES_TINY + ["run.iterations=1"]), world, out=first, dataset=mnist,
              quiet=True)
    for ranks in (2, 3):
        out = os.path.join(base, f"on{ranks}")
        if rank == 0:
            shutil.copytree(first, out)
        world.Barrier()
        sub = world.Split(0 if rank < ranks else 1, rank)
        if rank < ranks:
            theta, _ = train.run(full, sub, out=out, resume=True, dataset=mnist, quiet=True)
            res = io.read_results(os.path.join(out, io.RESULTS))
            assert np.array_equal(theta, reference), f"resumed on {ranks} ranks: theta differs from 1 rank"
            assert res["ranks"] == 4 and res["resumes"][-1]["ranks"] == ranks
        sub.Free()
        world.Barrier()


def test_a_data_directory_one_virtual_node_cannot_see_stops_every_rank(world, mnist_dir, tmp_path):
    missing = world.bcast(str(tmp_path / "not-on-node-1"), root=0)
    messages = load_data_messages(world, missing if world.Get_rank() >= 2 else mnist_dir)
    comm.parallel_assert(world, len(set(messages)) == 1 and messages[0] is not None
                         and messages[0].startswith("rank 2 on ") and "; rank 3 on " in messages[0],
                         f"ranks ended with {messages}")
