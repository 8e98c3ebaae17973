"""The two CNNs: parameter counts, layout, forward vs a plain reference, exact gradients."""
import numpy as np
import pytest

from hpc_es import nets
from tests import naive


def test_parameter_counts_are_the_papers():
    assert nets.tf_tutorial().n_params == 3_274_634
    assert nets.small().n_params == 28_938


def test_layout_covers_theta_once_and_locate_inverts_it(net):
    covered = np.zeros(net.n_params, np.int32)
    for p in net.layout:
        covered[p.offset:p.offset + p.size] += 1
        assert p.size == int(np.prod(p.shape))
    assert (covered == 1).all()
    theta = np.arange(net.n_params, dtype=np.float64)
    views = dict(zip([p.name for p in net.layout], [v for wb in net.views(theta) for v in wb]))
    rng = np.random.default_rng(0)
    for index in [0, net.n_params - 1, *rng.integers(0, net.n_params, 20)]:
        name, pos = net.locate(int(index))
        assert views[name][pos] == index
    with pytest.raises(IndexError):
        net.locate(net.n_params)


def test_init_tf_scheme(net):
    theta = net.init_theta(seed=1)
    for p in net.layout:
        v = theta[p.offset:p.offset + p.size]
        if p.kind == "b":
            assert (v == np.float32(0.1)).all()
        else:
            assert np.abs(v).max() <= 0.2 + 1e-7
            if p.size > 1000:  # truncated at 2 std: std = 0.1 * 0.8796
                assert abs(v.std() - 0.08796) < 0.005
    assert theta.dtype == np.float32
    np.testing.assert_array_equal(theta, net.init_theta(seed=1))
    he = net.init_theta(seed=1, scheme="he")
    assert (he[net.layout[1].offset:net.layout[1].offset + net.layout[1].size] == 0).all()
    with pytest.raises(ValueError, match="init scheme 'xavier'"):
        net.init_theta(scheme="xavier")


def test_forward_matches_plain_reference(net, images):
    x, y = images
    theta = net.init_theta(seed=2, dtype=np.float64) * 0.5
    np.testing.assert_allclose(net.logits(theta, x), naive.forward(net, theta, x), rtol=1e-10, atol=1e-10)
    assert np.isclose(net.loss(theta, x, y, l2=1e-3), naive.loss(net, theta, x, y, l2=1e-3), rtol=1e-12)


def test_float32_forward_and_uint8_input(net):
    x = np.random.default_rng(3).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    theta = net.init_theta(seed=3)
    ref = naive.forward(net, theta, x)
    np.testing.assert_allclose(net.logits(theta, x), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("l2", [0.0, 2e-4])
def test_gradient_matches_central_differences_in_every_tensor(net, images, l2):
    """Central differences in float64 on 6 random coordinates of every weight and bias tensor.

    h = 1e-6: truncation error O(h^2 * f''') is ~1e-12 and rounding ~1e-16 / h = 1e-10,
    so the tolerance |fd - g| <= 1e-7 + 1e-5 |g| leaves a wide margin while any wrong
    index or missing term (errors of order |g|) fails.
    """
    x, y = images
    theta = net.init_theta(seed=4, dtype=np.float64) * 0.5
    loss, grad = net.loss_and_grad(theta, x, y, l2=l2)
    assert np.isclose(loss, net.loss(theta, x, y, l2=l2), rtol=1e-14)
    rng = np.random.default_rng(5)
    h = 1e-6
    for p in net.layout:
        for index in p.offset + rng.choice(p.size, size=min(6, p.size), replace=False):
            old = theta[index]
            theta[index] = old + h
            up = net.loss(theta, x, y, l2=l2)
            theta[index] = old - h
            down = net.loss(theta, x, y, l2=l2)
            theta[index] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - grad[index]) <= 1e-7 + 1e-5 * abs(grad[index]), (
                f"{net.locate(int(index))}: finite difference {fd:.10g} vs gradient {grad[index]:.10g}")


def test_gradient_directional_derivative_on_all_coordinates(net, images):
    """One random direction over all of theta: d/dt loss(theta + t v) = <grad, v>."""
    x, y = images
    theta = net.init_theta(seed=6, dtype=np.float64) * 0.5
    v = np.random.default_rng(7).standard_normal(net.n_params)
    _, grad = net.loss_and_grad(theta, x, y)
    h = 1e-6
    fd = (net.loss(theta + h * v, x, y) - net.loss(theta - h * v, x, y)) / (2 * h)
    assert np.isclose(fd, grad @ v, rtol=1e-5)


def test_float32_gradient_close_to_float64(net, images):
    x, y = images
    theta64 = net.init_theta(seed=8, dtype=np.float64) * 0.5
    g64 = net.grad(theta64, x, y)
    g32 = net.grad(theta64.astype(np.float32), x.astype(np.float32), y)
    assert g32.dtype == np.float32
    cos = g32 @ g64 / np.linalg.norm(g32) / np.linalg.norm(g64)
    assert cos > 1 - 1e-6


def test_grad_out_buffer_and_buffer_reuse(net, images):
    x, y = images
    theta = net.init_theta(seed=9)
    out = np.full(net.n_params, np.nan, np.float32)
    g = net.grad(theta, x, y, out=out)
    assert g is out and np.isfinite(out).all()
    # A different batch size in between must not disturb results (separate buffers).
    net.loss(theta, x[:1], y[:1])
    np.testing.assert_array_equal(net.grad(theta, x, y), out)


def test_accuracy_counts_in_chunks(net):
    rng = np.random.default_rng(10)
    x, y = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8), rng.integers(0, 10, 23)
    theta = net.init_theta(seed=10)
    expect = np.sum(naive.forward(net, theta, x).argmax(1) == y)
    assert net.n_correct(theta, x, y, chunk=5) == expect
    assert net.accuracy(theta, x, y, chunk=100) == expect / 23


def test_bad_inputs_name_the_problem(net):
    theta = net.init_theta()
    x, y = np.zeros((2, 28, 28), np.float32), np.array([1, 2])
    with pytest.raises(ValueError, match=r"theta must have shape"):
        net.loss(theta[:-1], x, y)
    with pytest.raises(ValueError, match=r"float32 or float64"):
        net.loss(theta.astype(np.float16), x, y)
    with pytest.raises(ValueError, match=r"images must have shape"):
        net.loss(theta, np.zeros((2, 27, 28)), y)
    with pytest.raises(ValueError, match=r"uint8 pixels or float32"):
        net.loss(theta, x.astype(np.int32), y)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        net.loss(theta, x, np.array([1, 10]))
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(2,\)"):
        net.loss(theta, x, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="net 'resnet'"):
        nets.build("resnet")


def test_chunked_forward_equals_whole_batch():
    net = nets.small()
    assert net.forward_chunk == 10 and nets.tf_tutorial().forward_chunk is None
    rng = np.random.default_rng(11)
    x, y = rng.integers(0, 256, (53, 28, 28), dtype=np.uint8), rng.integers(0, 10, 53)
    theta = net.init_theta(seed=11)
    chunked = net.loss(theta, x, y)
    whole = nets.small()
    whole.forward_chunk = None
    assert np.isclose(chunked, whole.loss(theta, x, y), rtol=1e-6)
    assert np.isclose(chunked, naive.loss(net, theta, x, y), rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3])
def test_convolutions_in_chunks_keep_loss_and_gradient_exact(chunk):
    """Convolutions run in chunks of images (layers.CHUNK_NBYTES); a batch of 7 in chunks of
    1 or 3 (the last one short) must give the plain reference's loss and a gradient that
    passes a directional central difference, and the same gradient as one whole chunk."""
    rng = np.random.default_rng(12)
    x, y = rng.random((7, 28, 28)), rng.integers(0, 10, 7)
    net, whole = nets.small(), nets.small()
    for layer in net.layers[:2]:
        layer.chunk = chunk
    for layer in whole.layers[:2]:
        layer.chunk = 7
    theta = net.init_theta(seed=13, dtype=np.float64) * 0.5
    loss, grad = net.loss_and_grad(theta, x, y, l2=1e-3)
    assert np.isclose(loss, naive.loss(net, theta, x, y, l2=1e-3), rtol=1e-12)
    np.testing.assert_allclose(grad, whole.grad(theta, x, y, l2=1e-3), rtol=1e-10, atol=1e-13)
    v = rng.standard_normal(net.n_params)
    h = 1e-7  # a max-pool kink lies within 1e-6 of theta along v for this seed
    fd = (naive.loss(net, theta + h * v, x, y, l2=1e-3) - naive.loss(net, theta - h * v, x, y, l2=1e-3)) / (2 * h)
    assert np.isclose(fd, grad @ v, rtol=1e-7)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_shared_input_losses_equal_perturbed_theta_losses(net, dtype, rtol):
    """SharedInput (first layer's theta part once per batch, its perturbation's part once per
    offset) against the plain loss at theta + s eps, for both members of antithetic pairs,
    a repeated offset and a different one: float64 to 1e-12, float32 to rounding."""
    rng = np.random.default_rng(14)
    x, y = rng.integers(0, 256, (23, 28, 28), dtype=np.uint8), rng.integers(0, 10, 23)  # small: 3 chunks
    theta = net.init_theta(seed=15, dtype=dtype)
    table = rng.standard_normal(net.n_params + 1000).astype(dtype)
    shared = nets.SharedInput(net, theta, x, y)
    work = np.empty_like(theta)
    for offset, s in [(0, 0.002), (0, -0.002), (517, 0.002), (0, 0.5), (999, -0.5)]:
        perturbed = theta + dtype(s) * table[offset:offset + net.n_params]
        work[shared.rest:] = perturbed[shared.rest:]
        got = shared.loss(work, table, offset, dtype(s))
        assert np.isclose(got, net.loss(perturbed, x, y), rtol=rtol, atol=0), (offset, s)
    assert np.isclose(shared.loss(work, table, 999, dtype(-0.5)), naive.loss(net, perturbed.astype(np.float64), x, y),
                      rtol=max(rtol, 1e-10) if dtype == np.float64 else 1e-5)
