"""sarchive-es: the Elasticsearch consumer (documents.py, template.py and bulk_outcomes.py are
pure; bulk_writer.py delivers documents in bulk requests through elasticsearch_api.py, the
adapter over the Elasticsearch client; sink.py plugs them into the shared runner)."""
