# The backup stream format (common/backup_stream.h): round trip, truncation,
# corruption and bounds.
kelpie_unit_test(backup_stream_test kelpie_common)
