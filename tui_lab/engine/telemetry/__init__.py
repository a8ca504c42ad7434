"""Live figures while a run goes: NVML, process families, server polling and energy."""
