"""The one exception type a user is meant to read.

Every surface (CLI, TUI form, preset file) catches `LabError` and shows its text as a single
line; anything else is a bug and may show a traceback.
"""


class LabError(Exception):
    """A problem with the user's input or machine, stated in one line, before anything started."""
