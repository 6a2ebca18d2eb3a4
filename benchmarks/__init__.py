"""Benchmarks of agent-continuations: ratio tables measured in one run (``scripts/dev bench``).

Every figure compares against the cheapest native alternative measured in the same run, on
the same machine: the plain framework, the database's own bare update, the peers. Timings
live here and never in the tests; ``tests/test_bench_smoke.py`` only runs these code paths at
tiny sizes so they keep working.
"""
