"""The one base class of the errors a user can act on (a bad config, missing data, a diverged training,
a full disk, ...). The CLI prints such an error's message — which names what is wrong and how to fix it —
without a traceback and exits 2. Torch-free, so a command that needs no torch never imports it just to
catch an error class."""


class ArelboError(Exception):
    """An error whose message tells the user what is wrong and how to fix it."""


class UsageError(ArelboError, ValueError):
    """A command line that cannot work (a folder that does not exist, a value out of range)."""
