"""The GPU check: a CUDA llama-server on a lent GPU machine, instances x slots, one call."""
