import math

import pytest

from bench.stats import binomial_two_sided, chi2_one_df_sf, holm, mean_std, paired_test, wilson


def test_wilson_matches_the_textbook_interval():
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson(0, 20)
    assert low == 0.0 and round(high, 4) == 0.1611
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="0..n"):
        wilson(11, 10)


def test_mean_std_over_folds():
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_chi_square_and_exact_binomial_tails():
    assert chi2_one_df_sf(3.841458820694124) == pytest.approx(0.05, abs=1e-9)
    assert binomial_two_sided(1, 10) == pytest.approx(22 / 1024)
    assert binomial_two_sided(5, 10) == pytest.approx(1.0)


def test_paired_test_counts_only_discordant_requests_across_folds():
    # fold 0: A right on 20 requests B got wrong, B right on 5 A got wrong; fold 1: 5 and 5; concordant padding
    a0 = [True] * 20 + [False] * 5 + [True] * 30
    b0 = [False] * 20 + [True] * 5 + [True] * 30
    a1 = [True] * 5 + [False] * 5 + [False] * 10
    b1 = [False] * 5 + [True] * 5 + [False] * 10
    test = paired_test({"iw0": (a0, b0), "iw1": (a1, b1)})
    assert (test.a_only, test.b_only, test.n) == (25, 10, 75)
    assert test.statistic == pytest.approx(15**2 / 35)
    assert test.p_value == pytest.approx(math.erfc(math.sqrt(15**2 / 35 / 2)))
    assert not test.exact


def test_few_discordant_requests_get_the_exact_p_value():
    test = paired_test({"iw0": ([True] * 9 + [False], [False] * 9 + [True])})
    assert test.exact and test.p_value == pytest.approx(22 / 1024)
    assert paired_test({"iw0": ([True, False], [True, False])}).p_value == 1.0


def test_paired_outcomes_of_different_length_name_their_fold():
    with pytest.raises(ValueError, match="ow3: paired outcomes differ"):
        paired_test({"ow3": ([True], [True, False])})


def test_holm_steps_down_and_stays_monotone():
    adjusted = holm({"rt-nra": 0.01, "rt-nrb": 0.04, "nra-nrb": 0.03})
    assert adjusted == pytest.approx({"rt-nra": 0.03, "nra-nrb": 0.06, "rt-nrb": 0.06})
    assert holm({"a": 0.6, "b": 0.9}) == {"a": 1.0, "b": 1.0}
