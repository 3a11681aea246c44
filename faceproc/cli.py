"""The `faceproc` command line: parse options, build the config, call the library."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence

import pyarrow.fs as pafs

from faceproc import __version__
from faceproc.config import (
    Config,
    ConfigError,
    PreprocessConfig,
    absolute_paths,
    explicit_keys,
    file_uri_to_path,
    load_config,
    parse_override,
)
from faceproc.core import layout, storage
from faceproc.core.errors import message_or_type
from faceproc.core.lock import output_lock
from faceproc.core.model_names import MODEL_NAMES
from faceproc.core.ray_address import RayUnreachable, check_address, job_working_copy
from faceproc.core.schema import Status

log = logging.getLogger("faceproc")


DESCRIPTION = """Batch face recognition on Ray: photos in <root>/<split>/<person>/<photo> -> face crops
(Parquet), four trained classifiers, an accuracy report; then the people in new photos named.
`faceproc run` does the whole pipeline, incrementally. Paths are relative to the current directory."""


def _common(parser: argparse.ArgumentParser, on_ray: bool = True,
            example: str = "preprocess.face_margin=0.2") -> None:
    """--config, --set and -v; for the commands that run on Ray and lock OUT, also --ray-address and --wait."""
    parser.add_argument("--config", help="TOML or YAML file with config values (see README)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override one config value, e.g. --set {example}")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show every library's logs and debug lines")
    if not on_ray:
        return
    parser.add_argument("--ray-address", help="Ray cluster to join: an address, or 'auto' for a `ray start` head "
                        "(default: $RAY_ADDRESS, else a new local Ray)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for another run on the same output to finish (default: exit)")


def _config(args: argparse.Namespace, **values: object) -> Config:
    """The command's config, checked before anything is locked, created or loaded: its values
    (`load_config`), on a local disk that its output folders are not files (nor, in a Ray job, inside
    the job's temporary copy of its working_dir), and that a Ray cluster it names answers."""
    overrides = _overrides(args)
    for key, value in values.items():
        if value is not None:
            overrides[key] = value
    if getattr(args, "wait", 0) < 0:
        raise ConfigError(f"--wait {args.wait:g} must be at least 0 (seconds to wait for another run on the output)")
    if getattr(args, "ray_address", None):
        overrides["ray_address"] = args.ray_address
    config = absolute_paths(load_config(args.config, overrides))
    _refuse_unread_settings(args.command, _overrides(args))
    if hasattr(args, "ray_address") and config.ray_address is None and os.environ.get("RAY_ADDRESS"):
        config.ray_address = os.environ["RAY_ADDRESS"]  # what init_ray joins, and so what the saved config says
    used = [("output", config.output), *([("input", config.input)] if hasattr(args, "input") else []),
            *([("identify.into", config.identify.into)] if args.command == "identify" else [])]
    for what, uri in used:  # only those this command reads or writes: a shared config names others
        reason = uri and not storage.is_local(uri) and storage.reachable_or_reason(uri)
        if reason:
            raise ConfigError(f"{what} {uri} cannot be used: {reason}")
    job_copy = job_working_copy()
    for what, folder in (("output", config.output), ("identify.into", config.identify.into)):
        if folder and _local_type(folder) == pafs.FileType.File:
            raise ConfigError(f"{what} {folder} is a file, not a folder")
        if job_copy and folder and storage.is_local(folder) and _inside(storage.resolve(folder)[1], job_copy):
            raise ConfigError(f"{what} {folder} lies in this job's copy of its working_dir, which Ray deletes when "
                              "the job ends: give an absolute path on storage every node shares, or a URI (s3://...)")
    if hasattr(args, "ray_address"):  # the commands that may join a cluster: is one there to join?
        try:
            check_address(config.ray_address)
        except RayUnreachable as exc:
            raise ConfigError(str(exc)) from None
    return config


# What each command never reads ("section." for a whole section): a `--set` of it would do nothing, and
# the config the command saves would claim it made its outputs. A `--config` file's values are not refused:
# one file is shared by every command. `train` and `evaluate` read only the preprocessing settings that shape
# rows (the others are added by `_unread_settings`); `fetch-data` takes no --set.
UNREAD_SETTINGS: dict[str, tuple[str, ...]] = {
    "preprocess": ("train.", "evaluate.", "identify.", "models_dir"),
    "train": ("identify.", "evaluate.batch_size", "evaluate.driver_max_faces", "input", "data_dir"),
    "evaluate": ("train.", "identify.", "input", "data_dir", "models_dir"),
    "run": ("identify.",),
    "identify": ("train.", "evaluate.", "data_dir", "models_dir"),
    "predict": ("train.", "evaluate.", "identify.into", "identify.keep_old_results", "input", "data_dir",
                "models_dir"),
}
APPLIED_BY = {  # who applies a key (or a section): the refusal names it
    "preprocess": "`faceproc preprocess` or `faceproc run`", "train": "`faceproc train` or `faceproc run`",
    "evaluate": "`faceproc evaluate` or `faceproc run`", "identify": "`faceproc identify`",
    "evaluate.unknown_far": "`faceproc train` or `faceproc run` (facenet's unknown threshold is chosen as it trains)",
    "evaluate.unknown_quantile": "`faceproc train` or `faceproc run` (facenet's unknown threshold is chosen as it "
                                 "trains)",
    "input": "`faceproc preprocess`, `faceproc run` or `faceproc identify`",
    "data_dir": "`faceproc run` (which fetches the default dataset) or `faceproc fetch-data`",
    "models_dir": "`faceproc train` or `faceproc run`",
}


def _unread_settings(command: str) -> tuple[str, ...]:
    """UNREAD_SETTINGS[command], with the preprocessing settings that do not shape rows for the commands
    that only read rows."""
    unread = UNREAD_SETTINGS.get(command, ())
    if command in ("train", "evaluate"):
        from faceproc.preprocess.settings import ROW_FIELDS

        unread += tuple(f"preprocess.{field.name}" for field in dataclasses.fields(PreprocessConfig)
                        if field.name not in ROW_FIELDS)
    return unread


def _refuse_unread_settings(command: str, overrides: dict[str, str]) -> None:
    """A `--set` of a setting `command` never reads is refused in one line, naming who applies it."""
    unread = _unread_settings(command)
    for key in overrides:
        if any(key == name or (name.endswith(".") and key.startswith(name)) for name in unread):
            who = APPLIED_BY.get(key) or APPLIED_BY[key.split(".", 1)[0]]
            raise ConfigError(f"--set {key} is not read by `faceproc {command}`, so it would do nothing: "
                              f"{who} applies it")


def _require_input(config: Config) -> None:
    """A local input folder that is missing, or that holds the output, stops the command before OUT is
    locked or created (object storage is listed by the stage itself, which says the same)."""
    if _local_type(config.input) not in (None, pafs.FileType.Directory):
        raise FileNotFoundError(f"input folder {config.input} does not exist or is not a folder")
    _require_outputs_outside_input(config)


def _require_outputs_outside_input(config: Config) -> None:
    """The input is listed whole: an output inside it would be read as photos by the next run."""
    for what, folder in (("output", config.output), ("identify.into", config.identify.into)):
        if folder and "://" not in folder + config.input and _inside(folder, config.input):
            raise ConfigError(f"{what} {folder} is inside the input folder {config.input}: the next run would "
                              "read its files as photos; name a folder outside it")


def _require_fetch_outside_job_copy(config: Config) -> None:
    """In a `ray job submit --working-dir` job, a missing default dataset is not fetched into Ray's
    temporary copy of the working_dir (gone when the job ends, and on this node only); a data_dir
    elsewhere, on shared storage, is fetched into as anywhere else."""
    job_copy = job_working_copy()
    if job_copy and _inside(config.input, job_copy) and _local_type(config.input) == pafs.FileType.NotFound:
        raise ConfigError(f"input {config.input} is not there, and fetching the dataset would put it in this job's "
                          "copy of its working_dir, which Ray deletes when the job ends: run `faceproc fetch-data "
                          "--data-dir DIR` on storage every node shares and pass --input DIR/5-celebrity-faces-dataset")


def _require_output(config: Config) -> None:
    """The commands that read what `preprocess` wrote refuse a local output folder that does not exist,
    before their lock would create it."""
    if _local_type(config.output) == pafs.FileType.NotFound:
        raise FileNotFoundError(f"output folder {config.output} does not exist: run `faceproc run --input DIR "
                                f"--output {config.output}` (or `faceproc preprocess`) first")


def _adopt_rows_preprocessing(config: Config, args: argparse.Namespace) -> None:
    """`train` and `evaluate` read face rows without making them: their config takes the row-shaping
    preprocessing values of OUT's live rows (their settings record), so the config they save says what
    produced their outputs; one the user set to something else is refused in one line. Called with
    OUT locked: a preprocessing run it waited for may have made the rows anew."""
    from faceproc.core.manifest import live_settings, load_manifest
    from faceproc.preprocess.settings import adopt_row_fields, recorded_row_fields

    manifest = load_manifest(config.output, columns=["split", "status", "settings"])
    made_with = live_settings(manifest, layout.TRAIN_SPLIT) | live_settings(manifest, layout.VAL_SPLIT)
    recorded = recorded_row_fields(config.output, made_with)
    if recorded is None:  # no rows yet (the command says so), or rows of an earlier faceproc without a record
        return
    asked = explicit_keys(args.config, _overrides(args))
    adopt_row_fields(config.preprocess, recorded, asked, args.command)


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """The `--set KEY=VALUE` options, as given."""
    return dict(parse_override(text) for text in args.overrides)


def _refuse_other_crops_than_the_models(config: Config, args: argparse.Namespace, model: str) -> None:
    """`predict` and `identify` cut faces as the model's training rows were cut (`crop_settings`):
    a crop setting given with `--set` to something else is refused in one line, not silently replaced
    (a config file's is the shared one the other commands read, and leaves a stale model usable)."""
    from faceproc.inference.artifact import ModelArtifact
    from faceproc.inference.crop_settings import refuse_other_crops

    refuse_other_crops(config.output, config.preprocess, ModelArtifact(config.output, model).result(),
                       set(_overrides(args)), args.command)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _local_type(uri: str) -> pafs.FileType | None:
    """What a local path or file:// URI names (NotFound, File, Directory); None for object storage."""
    if not storage.is_local(uri):
        return None
    fs, path = storage.resolve(uri)
    return fs.get_file_info(path).type


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from faceproc.fetch import fetch_data

    result = fetch_data(args.data_dir, args.models_dir)
    state = "downloaded and verified" if result.downloaded else "already present, nothing to do"
    print(f"dataset: {result.dataset_dir}\nfacenet weights: {result.facenet_path}\n{state}")
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from faceproc.preprocess.run import run_preprocess

    config = _config(args, input=args.input, output=args.output)
    _require_input(config)
    with output_lock(config.output, args.wait):
        summary = run_preprocess(config)
    if summary.processed or summary.deleted:
        print(summary.format())
    else:  # as `run` says it: a table of zeros says less
        print(f"preprocess: nothing to do: all {summary.unchanged} files already processed "
              f"({summary.live_rejects} of them rejected)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from faceproc.train.run import run_train

    config = _config(args, output=args.output, **{
        "train.models": args.models, "train.epochs": args.epochs, "train.workers": args.workers,
        "train.gpus_per_worker": args.gpus_per_worker})
    _require_output(config)
    with output_lock(config.output, args.wait):
        _adopt_rows_preprocessing(config, args)
        results = run_train(config, force=args.force)
    for result in results:
        reason = f"  ({result['reason']})" if result["reason"] else ""
        status = str(result["status"])
        if result.get("up_to_date"):  # kept from an earlier run: its seconds are that run's
            status, seconds = ("up to date" if status == Status.OK else f"{status}, kept"), "not retrained"
        else:
            seconds = f"{result['train_seconds']:>7.1f} s"
        print(f"{result['model']:<18} {status:<14} {seconds}{reason}")
    return 1 if any(r["status"] == Status.FAILED for r in results) else _exit_code_of_skips(config.output, results)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from faceproc.evaluate.run import adopt_trained_unknown_settings, run_evaluate
    from faceproc.evaluate.tables import format_table

    config = _config(args, output=args.output)
    _require_output(config)
    with output_lock(config.output, args.wait):
        _adopt_rows_preprocessing(config, args)
        adopt_trained_unknown_settings(config, explicit_keys(args.config, _overrides(args)))
        rows = run_evaluate(config)
    print(format_table(rows))
    print(f"report: {layout.report_file(config.output, layout.REPORT_HTML)}")
    return 1 if any(r["status"] == Status.FAILED for r in rows) else 0


def cmd_run(args: argparse.Namespace) -> int:
    from faceproc.evaluate.tables import format_table
    from faceproc.pipeline import fetches_the_dataset, run_pipeline

    config = _config(args, input=args.input, output=args.output, **{"train.models": args.models,
                     "train.epochs": args.epochs, "train.workers": args.workers,
                     "train.gpus_per_worker": args.gpus_per_worker})
    if fetches_the_dataset(config):  # the default dataset is fetched when missing
        _require_fetch_outside_job_copy(config)
        _require_outputs_outside_input(config)
    else:
        _require_input(config)
    result = run_pipeline(config, force=args.force, wait_seconds=args.wait)
    if result.reported:
        print(format_table(result.reported))
    print(f"report: {layout.report_file(config.output, layout.REPORT_HTML)}")
    return 1 if result.failed else _exit_code_of_skips(config.output, result.training)


def _exit_code_of_skips(out: str, training: list[dict]) -> int:
    """1, saying why, when every model asked for was skipped (no weights for it) and none trained
    before stays in use: a scheduled job that left nothing to name a face must not report success;
    else 0."""
    from faceproc.inference.artifact import ModelArtifact

    if not training or any(r["status"] != Status.SKIPPED for r in training):
        return 0
    if any((ModelArtifact(out, r["model"]).saved_result() or {}).get("status") == Status.OK for r in training):
        return 0  # an older model stays in use
    print("faceproc: error: every model asked for was skipped, so nothing can name a face (the reasons are above)",
          file=sys.stderr)
    return 1


def cmd_predict(args: argparse.Namespace) -> int:
    """Exit 1 when no image could be read; a missing local file stops it before any model loads."""
    from faceproc.inference.predict import format_predictions, json_lines, predict_images, unreadable

    config = _config(args, output=args.output, **{"identify.model": args.model})
    _require_output(config)
    images = [file_uri_to_path(image) for image in args.images]
    missing = [path for path in images if _local_type(path) not in (None, pafs.FileType.File)]
    if missing:
        raise FileNotFoundError(f"not an image file (missing, or a folder): {', '.join(missing)}")
    _refuse_other_crops_than_the_models(config, args, config.identify.model)
    rows = predict_images(config, images, model=config.identify.model)
    print(json_lines(rows) if args.json else format_predictions(rows), end="" if args.json else "\n")
    return 1 if unreadable(rows) == len(set(images)) else 0


def cmd_identify(args: argparse.Namespace) -> int:
    from faceproc.identify.run import identities_folder, run_identify
    from faceproc.inference.artifact import ModelArtifact

    config = _config(args, input=args.input, output=args.output, **{
        "identify.model": args.model, "identify.into": args.into,
        "identify.keep_old_results": True if args.keep_old_results else None})
    _require_input(config)
    _require_output(config)
    folder = identities_folder(config)
    with output_lock(config.output, args.wait):  # OUT's lock first: no training swaps the model meanwhile
        ModelArtifact(config.output, config.identify.model).check_usable()  # before the identities folder exists
        _refuse_other_crops_than_the_models(config, args, config.identify.model)
        with output_lock(folder, args.wait):
            summary = run_identify(config)
    print(summary.format())
    print(f"identities: {folder}\nreport: {layout.identities_report(config.output, folder)}")
    return 0


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated: cnn,resnet50,resnet50_imagenet,facenet (default all)")
    parser.add_argument("--epochs", type=int, help="override every model's default epochs, except for a model "
                        "named in train.model_epochs, which wins")
    parser.add_argument("--workers", type=int,
                        help="Ray Train workers per model (default: one per GPU, or one per node on CPUs)")
    parser.add_argument("--gpus-per-worker", type=float,
                        help="default: 1 when the cluster has a GPU for every worker (--workers, else 1) of "
                        "every model trained at once, else 0")
    parser.add_argument("--force", action="store_true", help="retrain even when photos and settings are unchanged")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceproc", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="show every library's logs and debug lines")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch-data", help="download the dataset and FaceNet weights (idempotent)")
    fetch.add_argument("--data-dir", default="data", help="where the dataset goes (default: data)")
    fetch.add_argument("--models-dir", default="models", help="where facenet_keras.h5 goes (default: models)")
    fetch.set_defaults(func=cmd_fetch_data)

    pre = sub.add_parser("preprocess", help="photos -> face shards, rejects and manifest (Ray Data)")
    pre.add_argument("--input", required=True, help="<root> of <root>/<split>/<person>/<photo>")
    pre.add_argument("--output", required=True, help="output folder or URI")
    _common(pre)
    pre.set_defaults(func=cmd_preprocess)

    train = sub.add_parser("train", help="fit the models on the face shards (Ray Train)")
    train.add_argument("--output", required=True, help="the folder or URI preprocess wrote")
    _training_options(train)
    _common(train, example="train.batch_size=32")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="predictions, accuracy table and report.html")
    evaluate.add_argument("--output", required=True, help="the folder or URI train wrote")
    _common(evaluate, example="evaluate.batch_size=64")
    evaluate.set_defaults(func=cmd_evaluate)

    run = sub.add_parser("run", help="the main job: fetch, preprocess, train, evaluate (incremental)")
    run.add_argument("--input", help=f"photo tree (default: the fetched dataset, {Config().input})")
    run.add_argument("--output", help=f"output folder or URI (default {Config().output})")
    _training_options(run)
    _common(run)
    run.set_defaults(func=cmd_run)

    identify = sub.add_parser("identify", help="name every face in a tree of unlabelled photos (Ray Data, incremental)")
    identify.add_argument("--input", required=True, help="folder or URI of photos, any layout")
    identify.add_argument("--output", required=True, help="the folder or URI holding models/")
    identify.add_argument("--model", help=f"model to use: {', '.join(MODEL_NAMES)} (default: identify.model, "
                          f"{Config().identify.model})")
    identify.add_argument("--into", help="identities folder or URI (default OUT/identities)")
    identify.add_argument("--keep-old-results", action="store_true",
                          help="after a retrain, keep faces the older model version named (only new photos are read)")
    _common(identify, example="preprocess.detector_actors=4")
    identify.set_defaults(func=cmd_identify)

    predict = sub.add_parser("predict", help="name and probability for each face in each image")
    predict.add_argument("--output", required=True, help="the folder or URI holding models/")
    predict.add_argument("--model", help=f"model to use: {', '.join(MODEL_NAMES)} (default: identify.model, "
                         f"{Config().identify.model})")
    predict.add_argument("--json", action="store_true",
                         help="one JSON object per line: one per face, and one per image with no face or that "
                         "could not be read (box and person null, reason set)")
    predict.add_argument("images", nargs="+", help="image files")
    _common(predict, on_ray=False, example="identify.model=cnn")
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from faceproc.core import console

    console.configure(verbose=args.verbose or console.verbose())  # before Ray or TensorFlow is imported
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("faceproc: interrupted; what was published before stays whole, and the next run redoes the rest",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        print(f"faceproc: error: {message_or_type(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, (ConfigError, FileNotFoundError, ValueError)) else 1


def _is_user_error(exc: Exception) -> bool:
    """faceproc's own errors (and a missing input) are explained in one line; anything else is a bug."""
    return isinstance(exc, FileNotFoundError) or type(exc).__module__.startswith("faceproc")


if __name__ == "__main__":
    sys.exit(main())
