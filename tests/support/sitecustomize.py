"""TEST stand-in for a machine whose clock is wrong: with POCKET3D_TEST_CLOCK_SKEW set (seconds), ``time.time()`` of
this Python process runs that far ahead (negative: behind). Python imports this module at start-up in every process
that has tests/support on its path (the test servers and cluster processes); without the variable it does nothing."""

import os

_skew = float(os.environ.get("POCKET3D_TEST_CLOCK_SKEW") or 0)
if _skew:
    import time

    _real_time = time.time

    def _skewed_time() -> float:
        return _real_time() + _skew

    time.time = _skewed_time
