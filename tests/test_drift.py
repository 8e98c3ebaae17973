"""The digest that compares the ranks' copies of theta and the optimizer state (hpc_es.drift)."""
import numpy as np

from hpc_es import drift, optim


def test_every_single_bit_flip_changes_the_digest():
    """Exhaustively: each bit of a float32 theta of odd length (a partial last word), of Adam's m
    and v and of the step count, flipped alone, changes the digest."""
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(5).astype(np.float32)
    opt = optim.Adam(5, 1e-3)
    opt.step(theta.copy(), rng.standard_normal(5).astype(np.float32))
    state = {key: np.array(value, copy=True) for key, value in opt.state().items()}
    reference = drift.state_digest(theta, state)
    arrays = [theta, *state.values()]
    flips = 0
    for array in arrays:
        raw = array.reshape(-1).view(np.uint8)
        for byte in range(raw.size):
            for bit in range(8):
                raw[byte] ^= 1 << bit
                assert drift.state_digest(theta, state) != reference, (array.dtype, byte, bit)
                raw[byte] ^= 1 << bit
                flips += 1
    assert drift.state_digest(theta, state) == reference
    assert flips == 8 * (5 * 4 * 3 + 8)


def test_digest_is_the_wrapping_sum_of_64_bit_words():
    """Against a plain Python sum of the little-endian words (independent of numpy's reduce)."""
    data = np.random.default_rng(0).integers(0, 256, 8 * 1000 + 3, dtype=np.uint8)
    words = [int.from_bytes(data[i:i + 8].tobytes(), "little") for i in range(0, 8000, 8)]
    expected = (sum(words) + int.from_bytes(data[8000:].tobytes(), "little")) % 2**64
    assert drift.digest(data) == (expected,)


def test_the_odd_ranks_are_the_minority_else_those_unlike_rank_0():
    assert drift.odd_ranks([1, 1, 1]) == ((), (0, 1, 2))
    assert drift.odd_ranks([1, 1, 2]) == ((2,), (0, 1))
    assert drift.odd_ranks([2, 1, 1]) == ((0,), (1, 2))
    assert drift.odd_ranks([1, 2]) == ((1,), (0,))  # a tie: rank 0's copy is the one checkpointed
    assert drift.odd_ranks([1, 2, 3]) == ((1, 2), (0,))
    line = drift.describe(7, [1, 1, 2], ["a", "b", "c"])
    assert line.startswith("theta and the optimizer state drifted apart after iteration 7: rank 2 on c differs "
                           "from ranks 0 on a, 1 on b") and "no majority" not in line
    assert "no majority" in drift.describe(7, [1, 2], ["a", "b"])
    assert drift.describe(7, [5, 5], ["a", "b"]) is None
