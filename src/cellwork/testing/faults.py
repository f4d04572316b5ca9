"""Faults only tests can set: a process made to die at a named point.

Two environment variables, both needed, so that no production setting can arm one:

- ``CELLWORK_TEST_FAULTS=1`` allows faults at all;
- ``CELLWORK_TEST_EXIT_AT=<point>`` names the point where the process exits at once
  (``os._exit``: no drain, no ``finally``, as a kill would), with ``EXIT_CODE``.

With ``CELLWORK_TEST_EXIT_ARM_FILE=<path>`` as well, the point fires only while that
file exists, and only once across every process of a cell: the process that removes
the file is the one that exits. A test arms the fault of a running cell by creating
the file, at the moment it chooses.

Points: ``outbox.after_commit`` (``cellwork.events.outbox.AFTER_COMMIT``): a
transaction that wrote outbox rows committed, and the relay has not sent them yet.
"""

from __future__ import annotations

import os
import sys

TEST_FAULTS_ENV = "CELLWORK_TEST_FAULTS"
TEST_EXIT_AT_ENV = "CELLWORK_TEST_EXIT_AT"
TEST_ARM_FILE_ENV = "CELLWORK_TEST_EXIT_ARM_FILE"
EXIT_CODE = 86


def armed(point: str) -> bool:
    """True when the environment asks the process to die at ``point``."""
    return os.environ.get(TEST_FAULTS_ENV) == "1" and os.environ.get(TEST_EXIT_AT_ENV) == point


def fire(point: str) -> None:
    """Exit the process at once (``EXIT_CODE``) when ``point`` is armed; otherwise nothing."""
    if armed(point) and _take_arm_file():
        sys.stderr.write(f"cellwork test fault: exiting at {point}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def _take_arm_file() -> bool:
    """True without an arm file; with one, True for the one caller that removes it."""
    path = os.environ.get(TEST_ARM_FILE_ENV)
    if not path:
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
