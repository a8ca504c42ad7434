"""The load generator: HTTP connections, the client, its thread, request statistics
and server counters."""
