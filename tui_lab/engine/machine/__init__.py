"""The box: finding llama-server, nginx and a model; machine facts; the memory pre-flight."""
