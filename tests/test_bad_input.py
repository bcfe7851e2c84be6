"""Bad input, tried on purpose: one test per row of the book's table (p2pntk.bad_input.CASES).

Each case must raise (or warn) the expected class with a message naming the
parameter and, where there is a finite set, the allowed values.
"""
import re

import pytest

from p2pntk import bad_input


@pytest.mark.parametrize("case", bad_input.CASES, ids=[c.row for c in bad_input.CASES])
def test_bad_input_is_rejected_with_a_clear_message(case):
    check = pytest.warns if issubclass(case.expected, Warning) else pytest.raises
    with check(case.expected, match=case.match):
        case.call()


def test_every_case_is_a_different_bad_input():
    assert len({c.row for c in bad_input.CASES}) == len({c.input for c in bad_input.CASES}) == len(bad_input.CASES)


def test_attempt_reports_what_was_raised_or_warned():
    cases = {c.row: c for c in bad_input.CASES}
    kind, msg = bad_input.attempt(cases["unknown topology"])
    assert kind == "ValueError" and msg.startswith("unknown topology name='torus'; allowed: ring")
    kind, msg = bad_input.attempt(cases["step size beyond the sufficient bound"])
    assert kind == "RuntimeWarning" and re.search(cases["step size beyond the sufficient bound"].match, msg)
    good = bad_input.Case("no error", "len([])", lambda: len([]), ValueError, "")
    assert bad_input.attempt(good) == ("nothing", "")


def test_the_kernel_cases_of_predict_name_their_parameter():
    """predict's kernel arguments: each message names the parameter (kernel, kernel_fn, batch_size)."""
    cases = [c for c in bad_input.CASES if c.input.startswith("predict(")]
    assert len(cases) >= 5
    for case in cases:
        kind, msg = bad_input.attempt(case)
        assert kind == "ValueError" and any(name in msg for name in ("kernel", "batch_size")), (case.row, msg)
    assert "allowed: empirical, shared, analytic" in bad_input.attempt(cases[0])[1]
