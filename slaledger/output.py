"""``-o FILE`` of the commands that write a file (``audit replay``, ``report monthly``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def output_file(value: str) -> str:
    """``-o FILE`` checked when the command line is read, before a long replay: a path that
    cannot be written fails at once, and an existing file is not touched until the end."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{value}: not writable")
    return value
