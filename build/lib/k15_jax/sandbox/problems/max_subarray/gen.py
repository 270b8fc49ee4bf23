"""CYaRon generator for max_subarray: `python gen.py SEED` prints one test case.

Every fourth seed (SEED % 4 == 0) makes all values negative, the case that catches
solutions which allow an empty subarray.
"""

import random
import sys

from cyaron import Vector, randint
from cyaron.vector import VectorRandomMode

LIMIT = 10**6

seed = int(sys.argv[1])
random.seed(seed)
n = randint(1, 150)
lo, hi = (-LIMIT, -1) if seed % 4 == 0 else (-LIMIT, LIMIT)
values = [v[0] for v in Vector.random(n, [(lo, hi)], VectorRandomMode.repeatable)]
print(n)
print(" ".join(map(str, values)))
