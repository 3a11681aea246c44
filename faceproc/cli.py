"""The `faceproc` command line: parse options, build the config, call the library."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from faceproc.config import Config, ConfigError, load_config, parse_override

log = logging.getLogger("faceproc")


class UserError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML or YAML file with config values (see README)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set preprocess.face_margin=0.2")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: running cluster or local)")


def _config(args: argparse.Namespace, **values: object) -> Config:
    overrides = dict(parse_override(text) for text in args.overrides)
    for key, value in values.items():
        if value is not None:
            overrides[key] = value
    if args.ray_address:
        overrides["ray_address"] = args.ray_address
    return load_config(args.config, overrides)


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from faceproc.fetch import fetch_data

    result = fetch_data(args.data_dir, args.models_dir)
    state = "downloaded and verified" if result.downloaded else "already present, nothing to do"
    print(f"dataset: {result.dataset_dir}\nfacenet weights: {result.facenet_path}\n{state}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from faceproc.preprocess import run_preprocess

    config = _config(args, input=args.input, output=args.output)
    summary = run_preprocess(config)
    if not summary.processed and not summary.deleted:
        print(f"preprocess: nothing to do, all {summary.unchanged} files already processed")
    print(summary.format())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceproc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-data", help="download the dataset and FaceNet weights (idempotent)")
    fetch.add_argument("--data-dir", default="data")
    fetch.add_argument("--models-dir", default="models")
    fetch.set_defaults(func=cmd_fetch_data)

    pre = sub.add_parser("preprocess", help="photos -> face shards, rejects and manifest (Ray Data)")
    pre.add_argument("--input", required=True, help="<root> of <root>/<split>/<person>/<photo>")
    pre.add_argument("--output", required=True, help="output folder or URI")
    _common(pre)
    pre.set_defaults(func=cmd_preprocess)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("faceproc: interrupted; published outputs are unchanged", file=sys.stderr)
        return 130
    except (UserError, ConfigError, FileNotFoundError) as exc:
        print(f"faceproc: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if type(exc).__module__.startswith("faceproc"):
            print(f"faceproc: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
