"""What every Python client script checks with: a failure names the check
and ends the run."""

import sys


def fail(what):
    print(f"FAIL {what}")
    sys.exit(1)


def check(what, got, want):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")
