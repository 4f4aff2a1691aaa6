"""The column names a table body sends, checked against the training features and echoed in
errors only in part: a body may send thousands of names, each as long as it likes."""

from __future__ import annotations

from collections import Counter

NAMES_LISTED, NAME_CHARS = 10, 40  # of the column names an error echoes, and of each name


def listed(names: list[str], quoted: bool = False) -> str:
    """The first NAMES_LISTED names, each cut to NAME_CHARS: an error never echoes a whole body."""
    shown = [
        name if len(name) <= NAME_CHARS else f"{name[:NAME_CHARS]}..."
        for name in names[:NAMES_LISTED]
    ]
    text = ", ".join(map(repr, shown) if quoted else shown)
    return text + (f" and {len(names) - NAMES_LISTED} more" if len(names) > NAMES_LISTED else "")


def column_problem(features: list[str], columns: list[str]) -> str | None:
    """What is wrong with the column names of a table, if anything: each training feature once.
    Linear in the columns sent (a body may send thousands)."""
    sent, known = Counter(columns), set(features)
    missing = [name for name in features if name not in sent]
    unknown = [name for name in sent if name not in known]
    repeated = [name for name, count in sent.items() if count > 1]
    problems = [
        f"{what} {listed(names, quoted=True)}"
        for what, names in (("missing", missing), ("unknown", unknown), ("repeated", repeated))
        if names
    ]
    return "; ".join(problems) or None
