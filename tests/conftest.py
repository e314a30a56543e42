"""Suite-wide settings that keep the tests independent of how busy the machine is.

One thread per process: torch's OpenMP threads wait for each other at every parallel region, so on a 2-core machine
shared with other work a 2-thread process stalls whenever one of its threads is descheduled. Measured on the 2-core
AMD EPYC guest with two busy-loop processes beside it, `dgconv train --epochs 3` took 16.4 s with 2 threads and 6.9 s
with 1 (3.8 s either way on a quiet machine). The variable is set before torch is imported, so every process the tests
start inherits it too (tests.helpers.ENV spells it out for the ones that pass their own environment).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402 - after the thread count is fixed

torch.set_num_threads(1)
