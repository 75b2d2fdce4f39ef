"""What the tests of faults share to prove nothing on disk was lost or half-written (a helper
module, not a test file)."""

import os


def files(folder):
    """Every file under ``folder`` with its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found
