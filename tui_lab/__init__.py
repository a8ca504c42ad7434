"""llamalab-tui: sweep llama-server instances x slots x clients behind nginx.

The best layout differs per machine; the lab measures it instead of guessing.
"""

__version__ = "0.1.0"
