"""Ray job entry point: `python jobs/train.py --output OUT [--models ...]` (same options as the CLI)."""

import sys

from faceproc.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
