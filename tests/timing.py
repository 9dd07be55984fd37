"""Wall-clock waits in the tests, in one unit: `MS`, scaled by TEST_TIME_SCALE (a slow machine sets 2 or 3;
the default is 1). Every timeout for something that must happen, and every polling pause, is a multiple of
it. Pauses that pace a client against a server setting (a rate, a deadline, a timeout under test) are not:
scaling them would change what is tested, so they say so where they stand."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("TEST_TIME_SCALE", "1"))
MS = 0.001 * SCALE
SECOND = 1000 * MS
