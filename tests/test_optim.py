import numpy as np

from hpc_es import optim


def test_adam_matches_the_textbook_recursion():
    """TF's Adam, written element by element in float64 from Kingma & Ba, Algorithm 1
    with TF's placement of epsilon."""
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(5)
    ref = theta.astype(np.float64).copy()
    m, v = np.zeros(5), np.zeros(5)
    opt = optim.Adam(5, lr=0.01, dtype=np.float64)
    for t in range(1, 6):
        g = rng.standard_normal(5)
        opt.step(theta, g)
        for i in range(5):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.999 * v[i] + 0.001 * g[i] ** 2
            lr_t = 0.01 * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
            ref[i] -= lr_t * m[i] / (v[i] ** 0.5 + 1e-8)
    np.testing.assert_allclose(theta, ref, rtol=1e-13)
    state = {k: np.copy(v) for k, v in opt.state().items()}
    other = optim.Adam(5, lr=0.01, dtype=np.float64)
    other.load_state(state)
    assert other.step_count == 5 and np.array_equal(other.m, opt.m) and np.array_equal(other.v, opt.v)


def test_sgd_step():
    theta = np.ones(3)
    opt = optim.SGD(3, lr=0.5)
    opt.step(theta, np.array([1.0, 2.0, -2.0]))
    assert list(theta) == [0.5, 0.0, 2.0]
