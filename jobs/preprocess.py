"""Ray job entry point: `python jobs/preprocess.py --input DIR --output OUT` (same options as the CLI)."""

import sys

from faceproc.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
