"""`faceproc preprocess`: photos to Parquet face shards with Ray Data, incrementally.

list -> plan against the manifest (size and mtime; no photo is read) -> Arrow blocks of the files
to do -> read, hash and decode, MTCNN, crop, augment and encode (one actor pool; up to
`preprocess.driver_max_photos` photos in the driver) -> staged Parquet
-> publish: shards moved into place, rejects and then the manifest written atomically. Until the
manifest is replaced, readers see the previous run (shard and reject rows count only when the
manifest names their run).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from faceproc.config import Config
from faceproc.core import layout, storage
from faceproc.core.commit import (
    Staged,
    StageSummary,
    new_run_id,
    read_staged,
    remove_leftovers,
    run_staged,
    stage_photos,
)
from faceproc.core.manifest import (
    Plan,
    hash_where_needed,
    load_manifest,
    plan_run,
    same_content_other_people,
    split_files,
)
from faceproc.core.schema import FACE_SCHEMA
from faceproc.core.text import key_values
from faceproc.preprocess.discover import Discovery, discover
from faceproc.preprocess.operators import PARTITION_COLUMN, FacePipeline
from faceproc.preprocess.settings import describe_change, fingerprint, row_settings, saved_settings

log = logging.getLogger(__name__)


class PreprocessError(RuntimeError):
    """The run finished but its result is not usable (e.g. too many rejects); message says why."""


@dataclass(kw_only=True)
class PreprocessSummary(StageSummary):
    resettled: int = 0  # unchanged photos processed again because the preprocessing settings changed
    settings_change: str | None = None  # what changed, e.g. "face_margin 0.1 -> 0.4"
    hashed_in_driver: int = 0  # files read in the driver to decide (old manifest rows, verify_hashes)
    face_photos: int = 0
    face_rows: int = 0
    augmented_rows: int = 0
    aligned_faces: int = 0  # original crops warped onto the keypoint template
    unaligned_faces: int = 0  # original crops kept as margin crops (alignment off, or keypoints unusable)
    live_files: int = 0
    leakage: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [
            ("discovered files", self.discovered),
            *self.plan_lines(),
            *([("settings changed, redone", f"{self.resettled} ({self.settings_change})")] if self.resettled else []),
            ("hashed in the driver", self.hashed_in_driver),
            ("processed this run", self.processed),
            *self.detection_lines(),
            ("photos with a face", self.face_photos),
            ("  aligned / margin crop", f"{self.aligned_faces} / {self.unaligned_faces}"),
            ("face rows written", self.face_rows),
            ("  of which augmented", self.augmented_rows),
            *self.reject_lines(),
            ("live files / live rejects", f"{self.live_files} / {self.live_rejects}"),
            ("leakage (same content in two splits)", len(self.leakage)),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        return key_values(lines)


def run_preprocess(config: Config, run_id: str | None = None) -> PreprocessSummary:
    """Process the files under config.input that the manifest in config.output does not hold yet.

    Ray is imported and started only when there is work: a rerun with nothing new costs the listing."""
    started = time.monotonic()
    summary = PreprocessSummary(run_id=run_id or new_run_id())
    out = config.output
    found = discover(config.input)
    unused = found.unused_splits
    if unused:
        log.warning("photos in split folders that training (%s/) and evaluation (%s/) do not read: %s",
                    layout.TRAIN_SPLIT, layout.VAL_SPLIT, ", ".join(f"{split}/ {n}" for split, n in unused.items()))

    previous = load_manifest(out)
    splits = storage.list_dirs(layout.shards_root(out))
    remove_leftovers(out, previous, [layout.shard_dir(out, split) for split in splits])
    settings = row_settings(config.preprocess)
    listing = hash_where_needed(found.files, previous, config.preprocess.verify_hashes, storage.sha256_or_none)
    plan = plan_run(listing, previous, fingerprint(settings))
    summary.count_plan(found.files.num_rows, found.skipped, plan)
    summary.hashed_in_driver = plan.hashed
    if plan.resettled:
        summary.resettled = plan.resettled
        summary.settings_change = "; ".join(describe_change(saved_settings(out, old), settings)
                                            for old in sorted(plan.old_settings, key=str))
        log.info("preprocessing settings changed: %s; %d photos to redo", summary.settings_change, plan.resettled)


    def before_commit(staged: Staged) -> None:  # the settings file first: the manifest will name it
        _count_staged(summary, staged)
        storage.write_json_atomic(layout.preprocess_settings(out, plan.settings), settings)

    manifest = run_staged(out, summary.run_id, listing, plan, previous,
                          stage=functools.partial(_stage, config, found, plan, summary), on_staged=before_commit)
    _fill_live_counts(summary, manifest)
    summary.seconds = time.monotonic() - started
    storage.write_json_atomic(layout.config(out), config.to_dict())
    if plan.has_work:
        storage.write_json_atomic(layout.run_record(out, summary.run_id, "preprocess"),
                                  summary.to_dict())
    _check_reject_share(summary, manifest, out, config.preprocess.max_reject_share)
    return summary


def _stage(config: Config, found: Discovery, plan: Plan, summary: PreprocessSummary, staging: str) -> Staged:
    """Detect the faces of the files in `plan`, staging faces and rejects under `staging`; Ray starts
    only when they need the actor pool (`stage_photos`)."""
    todo = plan.to_process
    if todo.num_rows:
        label_ids = pc.index_in(todo["label"], value_set=pa.array(found.labels, pa.string()))
        files = pa.table({
            "path": todo["path"],
            "split": pc.fill_null(todo["split"], ""),
            "label": pc.fill_null(todo["label"], ""),
            "label_id": pc.fill_null(label_ids, -1).cast(pa.int32()),
            "layout_error": pc.fill_null(todo["layout_error"], ""),
        })
        rejects = storage.join(staging, "rejects")
        summary.detected_in = stage_photos(
            files, FacePipeline, (summary.run_id, rejects), config.preprocess, storage.join(staging, "faces"),
            config.ray_address, {"input": config.input, "output": config.output}, partition_cols=[PARTITION_COLUMN])
    folders = [(split_dir, layout.shard_dir(config.output, split_dir.rsplit("=", 1)[1]))
               for split_dir in _partition_dirs(storage.join(staging, "faces"))]
    return read_staged(staging, folders, FACE_SCHEMA, "source_path", "source_sha256", ("augment_index", "aligned"))


def _count_staged(summary: PreprocessSummary, staged: Staged) -> None:
    """The run's face and reject counts, from what its actors staged."""
    originals = pc.equal(staged.rows["augment_index"], 0)
    summary.face_photos = len(staged.faces_by_path)
    summary.face_rows = staged.rows.num_rows
    summary.augmented_rows = staged.rows.num_rows - (pc.sum(originals).as_py() or 0)
    summary.aligned_faces = pc.sum(pc.and_(originals, staged.rows["aligned"])).as_py() or 0
    summary.unaligned_faces = summary.face_photos - summary.aligned_faces
    summary.count_rejects(staged)


def _partition_dirs(faces_dir: str) -> list[str]:
    fs, path = storage.resolve(faces_dir)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(
        storage.join(faces_dir, info.base_name)
        for info in fs.get_file_info(pafs.FileSelector(path))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{PARTITION_COLUMN}=")
    )


def _fill_live_counts(summary: PreprocessSummary, manifest: pa.Table) -> None:
    summary.live_files = manifest.num_rows
    summary.count_live_rejects(manifest)
    leaked = manifest.filter(manifest.column("leakage"))
    summary.leakage = leaked.column("path").to_pylist()
    _warn_of_val_photos_in_train(leaked)
    _warn_of_photos_under_two_people(same_content_other_people(manifest))


def _warn_of_photos_under_two_people(copies: pa.Table) -> None:
    """Name the photos filed under two people of one split (a copy in the wrong folder): a model
    learns the face as both, and FaceNet's unknown threshold, which must not take one person for
    another, falls toward 0 and calls most known faces unknown."""
    if copies.num_rows:
        pairs = [f"{path} ({person})" for path, person in zip(copies["path"].to_pylist(), copies["label"].to_pylist())]
        shown = ", ".join(pairs[:6]) + (f" and {len(pairs) - 6} more" if len(pairs) > 6 else "")
        log.warning("photos with the same content filed under more than one person (%d files): %s; remove or move "
                    "the wrong copy", copies.num_rows, shown)


def _warn_of_val_photos_in_train(leaked: pa.Table) -> None:
    """Name the validation photos whose content is also a train photo: the models saw them, so the
    accuracy report overstates what they do on new photos. Copies in other split folders (test/, say)
    are counted as leakage in the summary but not named here: no model trains or is scored on them."""
    train = set(split_files(leaked, layout.TRAIN_SPLIT)["sha256"].to_pylist())
    val = split_files(leaked, layout.VAL_SPLIT)
    paths = [path for path, sha in zip(val["path"].to_pylist(), val["sha256"].to_pylist()) if sha in train]
    if paths:
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        log.warning("validation photos with the same content as a train photo (%d), which the accuracy report "
                    "counts though the models saw them (the manifest flags them: leakage): %s", len(paths), shown)


def _check_reject_share(summary: PreprocessSummary, manifest: pa.Table, out: str, max_share: float) -> None:
    """Fail a run whose published inputs are mostly rejects (a wrong folder, a broken export), saying why."""
    if summary.live_files and summary.live_rejects / summary.live_files > max_share:
        rejected = manifest.filter(pc.equal(manifest["status"], "rejected"))
        counts = sorted(pc.value_counts(pc.fill_null(rejected["reason"], "unknown")).to_pylist(),
                        key=lambda entry: (-entry["counts"], entry["values"]))
        reasons = ", ".join(f"{entry['values']} {entry['counts']}" for entry in counts)
        raise PreprocessError(
            f"{summary.live_rejects} of {summary.live_files} input files were rejected "
            f"({summary.live_rejects / summary.live_files:.0%} > preprocess.max_reject_share "
            f"{max_share:.0%}): {reasons}; each file and its reason are in {layout.rejects(out)}. The other files' "
            f"faces are published (`faceproc train` uses them); for `faceproc run` to go on, raise "
            "preprocess.max_reject_share"
        )
