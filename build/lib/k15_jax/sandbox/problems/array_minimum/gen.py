"""CYaRon generator for array_minimum: `python gen.py SEED` prints one test case.

This generator is deliberately BUGGY, to exercise the validity filter: for SEED % 4 == 1 it
prints n = 0 and an empty list, which the statement forbids (n >= 1). Correct solutions
disagree on such an input (some crash, others print their initial value), so the pipeline
must drop those cases.
"""

import random
import sys

from cyaron import Vector, randint
from cyaron.vector import VectorRandomMode

seed = int(sys.argv[1])
random.seed(seed)
n = 0 if seed % 4 == 1 else randint(1, 100)
values = [v[0] for v in Vector.random(n, [(1, 10**9)], VectorRandomMode.repeatable)]
print(n)
print(" ".join(map(str, values)))
