"""`python -m tui_lab.cli`: how detached sweeps and the standing cluster's supervisor start."""

import sys

from tui_lab.cli.main import main

sys.exit(main())
