"""Fuzz every operation of the REST API's OpenAPI document with many examples per operation.

The check itself is `tests/stack/test_fuzz.py` (a running `facegrid up`, schemathesis
generating valid and invalid requests, no answer may be a 5xx or an error outside the FindFace
error format); the suite runs it with 15 examples per operation and mode, this script with
`--examples` (default 200) and prints the tally of statuses.

    FACEGRID_MODEL_CACHE=... python bench/gateway_fuzz.py [--examples 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation and mode")
    args = parser.parse_args()
    env = {**os.environ, "FACEGRID_FUZZ_EXAMPLES": str(args.examples)}
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    command.append("tests/stack/test_fuzz.py")
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
