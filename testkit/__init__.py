"""Helpers shared by the tests and the benchmarks: one job-event factory (events), one
polling wait (waiting), one harness for services run as real processes (processes) and one
GET to sarchive-web as its authenticating proxy sends it (web).

Not part of the shipped package: the tests import it from the repository root (pytest's
pythonpath), the benchmarks put that root on sys.path (bench/harness.py)."""
