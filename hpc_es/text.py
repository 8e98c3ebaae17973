"""Wording shared by the logs, the command line and the report."""


def plural(n, word):
    """"1 rank", "2 ranks", "1,000 runs"."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"
