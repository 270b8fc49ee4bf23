"""CYaRon generator for sum_array: `python gen.py SEED` prints one test case.

Every fifth seed (SEED % 5 == 0) fills the array with the largest value, so that a 32-bit
accumulator overflows; the others draw values uniformly from the whole range.
"""

import random
import sys

from cyaron import Vector, randint
from cyaron.vector import VectorRandomMode

LIMIT = 10**9

seed = int(sys.argv[1])
random.seed(seed)
n = 1 if seed % 7 == 3 else randint(1, 200)
if seed % 5 == 0:
    values = [LIMIT] * n
else:
    values = [v[0] for v in Vector.random(n, [(-LIMIT, LIMIT)], VectorRandomMode.repeatable)]
print(n)
print(" ".join(map(str, values)))
