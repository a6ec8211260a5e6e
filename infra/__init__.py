"""Real local services for sarchive development and tests: Kafka, Slurm and Elasticsearch.

Standard library only: this package runs with the system python3 on a fresh machine, before the
project's virtualenv exists. `python3 -m infra.services` (or the `infra/services` wrapper) is
the command line; docs/development.md has the module map.
"""
