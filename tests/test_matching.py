"""GuidedMatcher: match_within's matching, with a guess, on points that move and grow in number."""
import numpy as np
import pytest

from etem.tracker.matching import GuidedMatcher, match_within


@pytest.mark.parametrize("seed", range(4))
def test_guided_matching_is_match_within(seed):
    # Sites that settle, jump, multiply and crowd; columns near them, between them and exactly
    # at the radius; guesses right, wrong, out of range, shared and missing.
    rng = np.random.default_rng(seed)
    radius = rng.uniform(0.5, 5.0)
    b = rng.uniform(0, 40 * radius, (int(rng.integers(1, 200)), 2))
    matcher = GuidedMatcher(radius)
    for _ in range(30):
        b = b + rng.normal(0, radius * rng.choice([0.001, 0.02, 0.1]), b.shape)
        jump = rng.random(len(b)) < 0.01
        b[jump] += rng.normal(0, 3 * radius, (int(jump.sum()), 2))
        if rng.random() < 0.5:  # new sites, some right next to old ones
            near = b[rng.integers(0, len(b), 3)] + rng.normal(0, 0.3 * radius, (3, 2))
            b = np.concatenate([b, rng.uniform(0, 40 * radius, (int(rng.integers(0, 10)), 2)), near])
        src = rng.choice(len(b), int(rng.integers(0, len(b) + 1)), replace=False)
        a = b[src] + rng.normal(0, radius * rng.choice([0.1, 0.4, 1.0]), (len(src), 2))
        at_radius = b[rng.integers(0, len(b), 2)] + np.array([[radius, 0.0], [0.0, -radius]])
        stray = rng.uniform(0, 40 * radius, (int(rng.integers(0, 10)), 2))
        a = np.concatenate([a, at_radius, stray])
        guess = np.concatenate([src, np.full(len(a) - len(src), -1)])
        wrong = rng.random(len(guess)) < 0.05
        guess[wrong] = rng.integers(-2, len(b) + 3, int(wrong.sum()))
        order = rng.permutation(len(a))
        a, guess = a[order], guess[order]
        want = match_within(a, b, radius)
        got = matcher.match(a, b, guess)
        for w, g in zip(want, got):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
