"""What a run measures: layouts, cells, the six runs of the original lab and the adaptive search."""
