"""Helpers shared by the tests and the benchmarks: one job-event factory (events), one
polling wait (waiting) and one harness for services run as real processes (processes).

Not part of the shipped package: the tests import it from the repository root (pytest's
pythonpath), the benchmarks put that root on sys.path (bench/harness.py)."""
