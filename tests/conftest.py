import numpy as np
import pytest

from hpc_es import nets


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``mpi(min_size=k)`` when fewer than k ranks run them, and those marked
    ``nodes`` unless 4 ranks run them as 2 virtual nodes (tests/test_nodes.py)."""
    import os
    size = _world_size()
    virtual = os.environ.get("HPC_ES_RANKS_PER_NODE", "")
    for item in items:
        if item.get_closest_marker("nodes") is not None and (size, virtual) != (4, "2"):
            item.add_marker(pytest.mark.skip(reason="needs HPC_ES_RANKS_PER_NODE=2 mpiexec -n 4 (README's "
                                             f"test command); running on {size} rank(s)"))
        marker = item.get_closest_marker("mpi")
        if marker is not None and size < marker.kwargs.get("min_size", 1):
            item.add_marker(pytest.mark.skip(
                reason=f"needs {marker.kwargs['min_size']} MPI ranks, running on {size}"))


def _world_size():
    from hpc_es import comm
    return comm.world().Get_size()


@pytest.fixture(scope="session", params=["small", "tf_tutorial"])
def net(request):
    return nets.build(request.param)


@pytest.fixture
def images():
    """Four smooth-ish synthetic images in [0, 1] (no MNIST needed for kernel tests)."""
    rng = np.random.default_rng(7)
    x = rng.random((4, 28, 28))
    x = (x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)) / 3.0
    return x, np.array([3, 1, 4, 1])


@pytest.fixture(scope="session")
def mnist_dir():
    """The real, verified MNIST directory: ``$HPC_ES_DATA``, else the per-user cache (downloaded
    there on first use when online). Unavailable data fails the test loudly, never skips it."""
    from hpc_es import data
    try:
        data.load_mnist()
    except data.DataError as err:
        pytest.fail(f"MNIST unavailable: {err}\nSet HPC_ES_DATA to a directory holding the four "
                    f"official IDX files (.gz or not), or run `hpc-es data fetch` on a machine online.")
    return data.resolve_data_dir(None)
