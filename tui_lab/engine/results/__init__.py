"""Results on disk: written a cell at a time, read back, ranked."""
