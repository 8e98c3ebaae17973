import os

import numpy as np
import pytest

from hpc_es import nets


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``mpi(min_size=k)`` when fewer than k ranks run them."""
    size = _world_size()
    for item in items:
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
    """The real MNIST files: ``$HPC_ES_DATA`` or the default cache. Missing data fails loudly."""
    from hpc_es import data
    directory = data.resolve_data_dir(None)
    missing = [f for f in data.FILES.values() if not data.find_file(directory, f)]
    if missing and not os.path.exists(os.path.join(directory, data.CACHE_NAME)):
        pytest.fail(f"MNIST not found in {directory} (missing {missing}); set HPC_ES_DATA to a "
                    f"directory holding the four IDX files or run `hpc-es data fetch`")
    return directory
