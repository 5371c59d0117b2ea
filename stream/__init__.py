"""Stream core: numba kernels for per-sensor state and the city's rates."""
