"""Wording shared by the logs, the command line and the report."""
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plural(n, word):
    """"1 rank", "2 ranks", "1,000 runs"."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def printable(value):
    """``value`` (a str from MPI or the host, e.g. ``MPI.Get_library_version()``) without NULs
    and other control characters (tab and newline kept), and without trailing white space:
    HDF5's variable-length strings refuse an embedded NUL, and Open MPI's version string ends
    in one."""
    return _CONTROL.sub("", value).rstrip()
