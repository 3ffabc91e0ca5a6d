"""A tiny seeded RNG for nogil code: splitmix64 plus the distributions MCTS needs.

numpy's Generator cannot be called without the GIL, and the search must be
reproducible from one integer seed, so the state is a single uint64 that the
owning object keeps.
"""

from libc.math cimport cos, log, pow, sqrt
from libc.stdint cimport uint64_t


cdef inline uint64_t rng_next(uint64_t* state) noexcept nogil:
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double rng_uniform(uint64_t* state) noexcept nogil:
    """Uniform in [0, 1) with 53 random bits."""
    return (rng_next(state) >> 11) * (1.0 / 9007199254740992.0)


cdef inline int rng_below(uint64_t* state, int n) noexcept nogil:
    """Uniform integer in [0, n) by multiply-shift (no modulo bias worth noting for n < 2**16)."""
    return <int>(((rng_next(state) >> 32) * <uint64_t>n) >> 32)


cdef inline double rng_normal(uint64_t* state) noexcept nogil:
    cdef double u1 = 1.0 - rng_uniform(state)  # (0, 1], keeps log finite
    cdef double u2 = rng_uniform(state)
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)


cdef inline double rng_gamma(uint64_t* state, double alpha) noexcept nogil:
    """Marsaglia-Tsang; alpha < 1 is boosted to alpha + 1 and scaled back (Dirichlet alphas are small)."""
    cdef double boost = 1.0
    if alpha < 1.0:
        boost = pow(rng_uniform(state) + 1e-300, 1.0 / alpha)
        alpha += 1.0
    cdef double d = alpha - 1.0 / 3.0
    cdef double c = 1.0 / sqrt(9.0 * d)
    cdef double x, v, u
    while True:
        x = rng_normal(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = rng_uniform(state)
        if log(u + 1e-300) < 0.5 * x * x + d - d * v + d * log(v):
            return boost * d * v
