"""Ray job entry point: `python jobs/pipeline.py` takes the same options as `faceproc run`."""

import sys

from faceproc.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
