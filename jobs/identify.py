"""Ray job entry point: `python jobs/identify.py --input DIR --output OUT` (same options as the CLI)."""

import sys

from faceproc.cli import main

if __name__ == "__main__":
    sys.exit(main(["identify", *sys.argv[1:]]))
