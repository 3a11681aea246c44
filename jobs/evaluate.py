"""Ray job entry point: `python jobs/evaluate.py` takes the same options as `faceproc evaluate`."""

import sys

from faceproc.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
