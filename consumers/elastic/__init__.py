"""sarchive-es: the Elasticsearch consumer (documents.py and template.py are pure; bulk.py is
the adapter over the Elasticsearch client; sink.py plugs it into the shared runner)."""
