"""What the benchmark scripts time the same way."""
import time


def best_of(fn, repeats):
    """The fastest of `repeats` timed calls of `fn` after one untimed warm-up call (first-call
    allocations and lazy initialisation), and the last call's result."""
    fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out
