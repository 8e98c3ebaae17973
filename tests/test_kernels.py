"""numba kernels against plain numpy and against their own interpreted Python (``py_func``)."""
import numpy as np
import pytest

from hpc_es import kernels
from tests import naive


def _x(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("cin,cout", [(1, 3), (4, 5)])
def test_im2col_gemm_equals_direct_convolution(cin, cout):
    x, w = _x((2, 8, 6, cin)), _x((5, 5, cin, cout), 1)
    cols = np.empty((2 * 8 * 6, 25 * cin))
    kernels.im2col_same(x, 5, 1.0, cols)
    out = (cols @ w.reshape(-1, cout)).reshape(2, 8, 6, cout)
    np.testing.assert_allclose(out, naive.conv2d_same(x, w), rtol=1e-12, atol=1e-12)


def test_im2col_scales_uint8_into_zero_padded_5x5_patches():
    """Against patches cut by hand from the image scaled to [0, 1] and zero-padded by 2
    ('SAME'), row-major over (dy, dx, channel) as the kernels' weights are laid out."""
    x = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 1), dtype=np.uint8)
    cols = np.empty((72, 25), np.float32)
    kernels.im2col_same(x, 5, 1 / 255, cols)
    padded = np.pad(x.astype(np.float64) / 255, ((0, 0), (2, 2), (2, 2), (0, 0)))
    want = np.array([padded[n, i:i + 5, j:j + 5, :].ravel() for n in range(2) for i in range(6) for j in range(6)])
    np.testing.assert_allclose(cols, want, rtol=1e-6, atol=1e-7)


def test_col2im_is_the_adjoint_of_im2col():
    # <im2col(x), D> == <x, col2im(D)> for all x, D defines the adjoint exactly.
    x, d = _x((2, 6, 4, 3)), _x((2 * 6 * 4, 25 * 3), 1)
    cols = np.empty_like(d)
    kernels.im2col_same(x, 5, 1.0, cols)
    back = np.empty_like(x)
    kernels.col2im_same(d, 5, back)
    assert np.isclose(np.sum(cols * d), np.sum(x * back), rtol=1e-12)


def test_pool_bias_relu_equals_relu_then_pool():
    z, bias = _x((3, 6, 4, 5)), _x(5, 1)
    out, arg = np.empty((3, 3, 2, 5)), np.empty((3, 3, 2, 5), np.int8)
    kernels.pool_bias_relu(z, bias, out, arg)
    np.testing.assert_allclose(out, naive.maxpool2x2(np.maximum(z + bias, 0)), rtol=0, atol=1e-15)


def test_pool_backward_routes_gradient_to_the_winner():
    z, bias = _x((2, 4, 4, 3)), _x(3, 1)
    out, arg = np.empty((2, 2, 2, 3)), np.empty((2, 2, 2, 3), np.int8)
    kernels.pool_bias_relu(z, bias, out, arg)
    dout = _x(out.shape, 2)
    dz, db = np.empty_like(z), np.empty(3)
    kernels.pool_bias_relu_backward(dout, out, arg, dz, db)
    # Reference by brute-force perturbation of each input: the function is piecewise linear.
    eps = 1e-7
    for idx in np.ndindex(z.shape):
        zp = z.copy()
        zp[idx] += eps
        outp = naive.maxpool2x2(np.maximum(zp + bias, 0))
        assert np.isclose(np.sum(dout * (outp - out)) / eps, dz[idx], atol=1e-6)
    np.testing.assert_allclose(db, np.sum(dout * (out > 0), axis=(0, 1, 2)), rtol=1e-12)


def test_softmax_xent_value_and_gradient():
    logits, labels = _x((5, 10)) * 3, np.array([0, 9, 3, 3, 7])
    grad = np.empty_like(logits)
    loss = kernels.softmax_xent(logits, labels, grad)
    assert np.isclose(loss, naive.xent(logits, labels), rtol=1e-13)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p[np.arange(5), labels] -= 1
    np.testing.assert_allclose(grad, p / 5, rtol=1e-12, atol=1e-15)
    assert kernels.softmax_xent(logits, labels, np.empty((0, 10))) == loss


def test_softmax_xent_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4]], np.float32)
    assert np.isfinite(kernels.softmax_xent(logits, np.array([1]), np.empty((0, 3), np.float32)))


def test_dense_helpers():
    z, bias = _x((4, 6)), _x(6, 1)
    relu = z.copy()
    kernels.bias_act(relu, bias, True)
    np.testing.assert_array_equal(relu, np.maximum(z + bias, 0))
    d, db = _x((4, 6), 2), np.empty(6)
    expect = d * (relu > 0)
    kernels.relu_backward(d, relu, db)
    np.testing.assert_array_equal(d, expect)
    np.testing.assert_allclose(db, expect.sum(0), rtol=1e-12)
    sums = np.empty(6)
    kernels.column_sums(d, sums)
    np.testing.assert_allclose(sums, d.sum(0), rtol=1e-12)
    logits = _x((50, 10), 3)
    assert kernels.count_correct(logits, np.arange(50) % 10) == np.sum(
        logits.argmax(1) == np.arange(50) % 10)


def test_one_channel_fast_path_equals_general_loop():
    x = np.random.default_rng(1).random((2, 7, 6, 1))
    fast, general = np.empty((84, 25)), np.empty((84, 25))
    kernels.im2col_same(x, 5, 0.5, fast)
    kernels.im2col_same(np.concatenate([x, x], axis=3), 5, 0.5, np.empty((84, 50)))  # compile C=2
    cols2 = np.empty((84, 50))
    kernels.im2col_same(np.concatenate([x, np.zeros_like(x)], axis=3), 5, 0.5, cols2)
    general[:] = cols2[:, 0::2]
    np.testing.assert_array_equal(fast, general)


def test_nan_propagates_through_pool_and_relu():
    z = np.zeros((1, 2, 2, 2))
    z[0, 1, 1, 0] = np.nan
    out, arg = np.empty((1, 1, 1, 2)), np.empty((1, 1, 1, 2), np.int8)
    kernels.pool_bias_relu(z, np.array([-1.0, -1.0]), out, arg)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 0.0
    h = np.array([[np.nan, -1.0]])
    kernels.bias_act(h, np.zeros(2), True)
    assert np.isnan(h[0, 0]) and h[0, 1] == 0.0


def test_public_kernels_refuse_windows_outside_the_table_and_wrong_arrays():
    """numba checks no bounds: the wrappers name the offending perturbation instead."""
    import pytest
    table = np.arange(100, dtype=np.float32)
    out = np.empty(10, np.float32)
    kernels.aggregate_dense(table, np.array([0, 90]), np.ones(2), out)  # the last window ends at 100: fine
    with pytest.raises(ValueError, match=r"perturbation 1: table window \[91, 101\) is outside the noise table of 100"):
        kernels.aggregate_dense(table, np.array([0, 91]), np.ones(2), out)
    with pytest.raises(ValueError, match=r"perturbation 0: table window \[-1, 9\)"):
        kernels.aggregate_dense(table, np.array([-1]), np.ones(1), out)
    with pytest.raises(ValueError, match="weights: expected floats of shape"):
        kernels.aggregate_dense(table, np.array([0, 1]), np.ones(3), out)
    with pytest.raises(ValueError, match="out: expected float32, got float64"):
        kernels.aggregate_dense(table, np.array([0]), np.ones(1), np.empty(10))
    with pytest.raises(ValueError, match=r"perturbation 1: table window \[95, 105\)"):
        kernels.aggregate_sparse(table, np.array([0, 95]), np.ones(2), np.array([0, 10]), np.array([10, 10]), 0,
                                 np.empty(20, np.float32))
    with pytest.raises(ValueError, match="perturbation 1: bucket start 0 after 10: pass the perturbations grouped"):
        kernels.aggregate_sparse(table, np.array([0, 5]), np.ones(2), np.array([10, 0]), np.array([10, 10]), 0,
                                 np.empty(20, np.float32))
    theta = np.zeros(10, np.float32)
    kernels.perturb(theta, table, 90, 1.0, out)
    np.testing.assert_array_equal(out, table[90:])
    with pytest.raises(ValueError, match=r"perturbation 0: table window \[91, 101\)"):
        kernels.perturb(theta, table, 91, 1.0, out)


def test_es_checks_every_offset_of_an_iteration_once():
    import pytest
    from hpc_es import es, limited, nets
    net = nets.build("small")
    theta = net.init_theta(0)
    table = np.zeros(net.n_params + 10, np.float32)
    pop = es.Population(np.array([0, 11]), np.array([0, 0, 1, 1]), np.array([1, -1, 1, -1], np.float32),
                        np.arange(5))
    x, y = np.zeros((50, 28, 28), np.uint8), np.zeros(50, np.int64)
    with pytest.raises(ValueError, match=r"perturbation 1: table window \[11, 28949\)"):
        es.evaluate(net, theta, table, pop, 0.002, x, y, 0, 4, np.empty(4), np.empty_like(theta))
    with pytest.raises(ValueError, match="perturbation 1: table window"):
        es.gradient(table, pop, np.ones(4), 0.002, np.empty_like(theta))
    buckets = limited.partition(net.layout, 500)
    bad = es.Population(np.array([0, 0]), np.array([0, 0, 1, 1]), np.array([1, -1, 1, -1], np.float32),
                        np.arange(5), start=np.array([0, net.n_params - 10]), length=np.array([500, 500]),
                        inv_p=np.ones(2))
    assert buckets.count > 2
    with pytest.raises(ValueError, match=r"perturbation 1: bucket \[28928, 29428\) is outside theta of 28938"):
        es.evaluate(net, theta, table, bad, 0.002, x, y, 0, 4, np.empty(4), np.empty_like(theta))


def test_perturb_pair_equals_two_single_perturbations_bit_for_bit():
    """Ranks may split an antithetic pair, so the pair kernel must give exactly what the
    single one gives for each member (same FMA contraction), for float32 and float64."""
    for dtype in (np.float32, np.float64):
        theta, table = _x(10_001, 1, dtype), _x(20_000, 2, dtype)
        plus, minus, one = np.empty_like(theta), np.empty_like(theta), np.empty_like(theta)
        scale = dtype(0.002)
        kernels._perturb_pair(theta, table, 77, scale, plus, minus)
        kernels._perturb(theta, table, 77, scale, one)
        np.testing.assert_array_equal(plus, one)
        kernels._perturb(theta, table, 77, -scale, one)
        np.testing.assert_array_equal(minus, one)


def test_directional_derivatives_equal_float64_dot_products_whatever_the_call():
    """eps_k . g by the dense and sparse kernels against numpy in float64; each value the same
    bits whichever other perturbations share the call (ranks split them differently)."""
    rng = np.random.default_rng(11)
    table = rng.standard_normal(300_000).astype(np.float32)
    g = rng.standard_normal(70_001).astype(np.float32)
    offsets = rng.integers(0, table.size - g.size, 29)
    ref = np.array([table[o:o + g.size].astype(np.float64) @ g for o in offsets])
    d = np.empty(29)
    kernels.directional_dense(table, offsets, g, d, block=4096)
    np.testing.assert_allclose(d, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    for lo, hi in [(0, 1), (1, 9), (9, 29), (3, 27)]:
        part = np.empty(hi - lo)
        kernels.directional_dense(table, offsets[lo:hi][::-1], g, part, block=4096)
        assert np.array_equal(part[::-1], d[lo:hi])
    starts = rng.integers(0, g.size - 500, 29)
    sizes = rng.integers(1, 501, 29)
    ref = np.array([table[o:o + m].astype(np.float64) @ g[s:s + m] for o, s, m in zip(offsets, starts, sizes)])
    kernels.directional_sparse(table, offsets, starts, sizes, g, d)
    np.testing.assert_allclose(d, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    part = np.empty(10)
    kernels.directional_sparse(table, offsets[5:15], starts[5:15], sizes[5:15], g, part)
    assert np.array_equal(part, d[5:15])


def test_directional_kernels_refuse_windows_outside_the_table_or_g():
    table, g = np.zeros(100, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match=r"perturbation 1: table window \[91, 101\) is outside the noise table"):
        kernels.directional_dense(table, np.array([0, 91]), g, np.empty(2))
    with pytest.raises(ValueError, match=r"out: expected 2 elements, got 3"):
        kernels.directional_dense(table, np.array([0, 1]), g, np.empty(3))
    with pytest.raises(ValueError, match=r"perturbation 0: bucket \[8, 12\) is outside g of 10 parameters"):
        kernels.directional_sparse(table, np.array([0]), np.array([8]), np.array([4]), g, np.empty(1))
