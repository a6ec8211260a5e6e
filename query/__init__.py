"""The read side of the archive: `sarchive show|search|diff|modules` over Elasticsearch or
the file archive, one record model and one output for both (docs/cli.md)."""
