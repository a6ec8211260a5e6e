"""What every sarchive service shares besides the event contract: configuration, logging,
metrics and Kafka client settings. It lives beside the contract because the producer and the
consumers must not import each other."""
