"""adamx's benchmark suite (``python -m benchmarks``); not part of the library and never run by the tests' timing."""
