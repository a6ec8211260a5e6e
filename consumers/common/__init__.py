"""Machinery every sarchive consumer shares: settings, the batch runner, the dead-letter
topic, metrics and main(). A service supplies only its Sink and its settings subclass."""
