"""The size limit of a job event, from which every Kafka size setting on its path derives.

This module imports nothing, so that infra/ (standard library only, run before the project is
installed) can load it by path to configure the test broker with the same limits.
"""

MIB = 1024 * 1024

# The largest encoded job event, a Kafka record's value. Slurm's default max_script_size is
# 4 MiB and a v1 or v2 event (still read during an upgrade) carries the script twice (its
# field and the spool copy) beside the environment: 16 MiB leaves room for several MiB of
# environment. A v3 event carries the script once.
MAX_EVENT_BYTES = 16 * MIB

# Key, headers and the record batch's framing around one event.
RECORD_OVERHEAD_BYTES = 64 * 1024

# What every hop must accept for one event: the topic's max.message.bytes, the broker's
# message.max.bytes and replica fetch sizes, the clients' message.max.bytes and
# fetch.max.bytes. Compression only ever makes a batch smaller than this.
MAX_MESSAGE_BYTES = MAX_EVENT_BYTES + RECORD_OVERHEAD_BYTES

# A fetch response carries up to fetch.max.bytes plus the protocol's own framing.
MAX_RESPONSE_BYTES = MAX_MESSAGE_BYTES + MIB
