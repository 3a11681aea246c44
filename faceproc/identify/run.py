"""`faceproc identify`: who is in each photo of a tree of unlabelled photos, as a Ray Data job.

list (any layout) -> plan against the identities manifest (a photo whose listing entry is unchanged and
that this model version already identified is not read) -> Arrow blocks of the photos to do ->
`IdentifyPipeline` actors (decode, every face, training's crop, the model and its open-set check) ->
staged Parquet -> publish: shards moved into place, rejects, then the manifest (the commit) -> report.
A photo another model version identified from crops cut as this one's are is not read either: its
stored faces are named again (`rename`), and a photo rejected with those crop settings stays rejected.
Each manifest row's `settings` says both: `<crop fingerprint>/<model version>` (`identity_settings`).

The identities folder (default OUT/identities) keeps preprocessing's commit protocol and layout, so it
has the same guarantees: until its manifest is replaced readers see the previous run, and what a run
that died left behind is never live and is removed by the next run.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceproc.config import Config, ConfigError
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
from faceproc.core.manifest import Plan, hash_where_needed, load_manifest, plan_run
from faceproc.core.schema import IDENTITY_SCHEMA
from faceproc.core.text import key_values, plural
from faceproc.identify.rename import stage_renames, stored_faces
from faceproc.identify.rows import iter_live_identities
from faceproc.inference.artifact import ModelArtifact
from faceproc.preprocess.discover import list_photos

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class IdentifySummary(StageSummary):
    model: str
    model_version: str
    identities: str  # the identities folder
    reidentified: int = 0  # unchanged photos identified again: another model or model version named them
    renamed: int = 0  # of those, photos whose stored faces were named again, without reading the photo
    renamed_faces: int = 0  # their faces
    renamed_from_embeddings: int = 0  # of those, faces named from their stored embeddings (the head alone)
    renamed_in: str = ""  # where: the driver or an actor pool
    faces: int = 0  # found this run
    live_photos: int = 0  # photos with at least one identified face
    live_faces: int = 0
    faces_by_person: dict[str, int] = field(default_factory=dict)  # live faces; "unknown" included
    older_versions: int = 0  # live faces named by another version of the model (identify.keep_old_results)

    def format(self) -> str:
        people = sorted(self.faces_by_person.items(), key=lambda item: (item[0] == "unknown", item[0]))
        lines = [
            ("model", f"{self.model} (version {self.model_version[:12]})"),
            ("photos found", self.discovered),
            *self.plan_lines(),
            *([("identified again (model or crops changed)", self.reidentified)] if self.reidentified else []),
            ("photos read this run", self.processed),
            *self.detection_lines(),
            *([("photos named again from stored faces", f"{self.renamed} ({plural(self.renamed_faces, 'face')})"),
               *([("  from stored embeddings (no FaceNet pass)", plural(self.renamed_from_embeddings, "face"))]
                 if self.renamed_from_embeddings else []),
               ("  named in", self.renamed_in)] if self.renamed else []),
            ("faces found this run", self.faces),
            *self.reject_lines(),
            ("photos with faces / faces (all)", f"{self.live_photos} / {self.live_faces}"),
            *[(f"  {person}", n) for person, n in people],
            *([("  named by an older model version", self.older_versions)] if self.older_versions else []),
            ("rejected photos (all)", self.live_rejects),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        return key_values(lines)


def identities_folder(config: Config) -> str:
    """`identify.into`, else OUT/identities. Not OUT itself: its manifest and rejects are preprocessing's."""
    if config.identify.into and config.identify.into.rstrip("/") == config.output.rstrip("/"):
        raise ConfigError(f"identify.into {config.identify.into} is the output folder itself: name another "
                          f"folder, or leave it out for {layout.identities_root(config.output)}")
    return config.identify.into or layout.identities_root(config.output)


def run_identify(config: Config, run_id: str | None = None) -> IdentifySummary:
    """Identify the photos under config.input that the identities folder does not hold for this model
    version yet; Ray is started only when the work needs the actor pool (`stage_photos`). Detection and
    crop settings are the model's (`crop_settings.training_preprocess`), and the run record saves the
    config with them."""
    from faceproc.identify.report import write_identities_report
    from faceproc.inference.crop_settings import crop_fingerprint, training_preprocess

    started = time.monotonic()
    out, name, root = config.output, config.identify.model, identities_folder(config)
    artifact = ModelArtifact(out, name)
    artifact.check_usable()
    version = artifact.version()
    config = dataclasses.replace(config, preprocess=training_preprocess(out, config.preprocess, artifact.result()))
    summary = IdentifySummary(run_id=run_id or new_run_id(), model=name, model_version=version, identities=root)
    previous = load_manifest(root)
    _require_no_photos_outside(previous, config.input, root)  # before a listing that may take minutes
    found = list_photos(config.input)
    remove_leftovers(root, previous, [layout.identity_shards(root)])
    listing = hash_where_needed(found.files, previous, config.preprocess.verify_hashes, storage.sha256_or_none)
    crops = crop_fingerprint(config.preprocess)
    settings = identity_settings(crops, version)
    plan = plan_run(listing, _as_judged(previous, version, crops, config.identify.keep_old_results), settings)
    renames = _stored_faces_to_rename(plan, previous, crops, root, artifact.embedder())
    summary.count_plan(found.files.num_rows, found.skipped, plan)
    summary.reidentified, summary.renamed = plan.resettled, renames.photos.num_rows
    summary.renamed_from_embeddings = renames.from_embeddings
    summary.processed -= renames.photos.num_rows
    if plan.resettled:
        log.info("%s made with another model version or other crop settings: identifying them again with %s "
                 "version %s: %d from their stored faces, %d read again (their faces were cut with other crop "
                 "settings, or are not all stored); --keep-old-results keeps the older results",
                 plural(plan.resettled, "photo"), name, version[:12], renames.photos.num_rows,
                 plan.resettled - renames.photos.num_rows)

    manifest = run_staged(root, summary.run_id, listing, plan, previous,
                          stage=functools.partial(_stage, config, plan, renames, version, summary, root=root),
                          on_staged=functools.partial(_count_staged, summary, renames))
    _fill_live_counts(summary, root, manifest)
    summary.seconds = time.monotonic() - started
    if plan.has_work:  # before the report: a run killed while drawing it is committed, so it has its record
        storage.write_json_atomic(layout.run_record(root, summary.run_id, "identify"),
                                  {**summary.to_dict(), "config": config.to_dict()})
    write_identities_report(layout.identities_report(out, root), root, manifest, summary)
    return summary


def _require_no_photos_outside(previous: pa.Table, input_root: str, root: str) -> None:
    """A run takes the photos it does not list for deleted: identifying one folder into identities
    that hold another's (yesterday's inbox, a parent folder) would drop their results, so it is refused."""
    outside = previous.filter(pc.invert(pc.starts_with(previous["path"], pattern=input_root.rstrip("/") + "/")))
    if outside.num_rows:
        raise ConfigError(f"the identities in {root} hold {plural(outside.num_rows, 'photo')} from outside "
                          f"{input_root} (such as {outside['path'][0]}), whose results identifying it alone would "
                          "drop: identify a folder holding both (only new photos are read), pass --into another "
                          "identities folder, or delete this one if the photos moved")


def identity_settings(crop_fingerprint: str, version: str) -> str:
    """An identities manifest row's `settings`: the crops its faces were cut as, and who named them."""
    return f"{crop_fingerprint}/{version}"


def _made_with_crops(previous: pa.Table, crop_fingerprint: str) -> pa.ChunkedArray:
    return pc.fill_null(pc.starts_with(previous["settings"], pattern=crop_fingerprint + "/"), False)


def _as_judged(previous: pa.Table, version: str, crop_fingerprint: str, keep_old_results: bool) -> pa.Table:
    """The manifest as the plan must see it, every row the current version would not redo stamped
    with its `identity_settings`:
    - a photo rejected with the same crop settings stays rejected whatever model looks (no face was
      found in it, or it could not be decoded);
    - a row an earlier faceproc stamped with the bare model version is this version's if the version
      is the same (identify has always cut faces as the model's training rows were cut);
    - with `keep_old_results`, every photo counts as identified by the current version, so only new
      and changed photos are read."""
    settings = identity_settings(crop_fingerprint, version)
    if keep_old_results:
        current = pa.array(np.ones(previous.num_rows, bool))
    else:
        current = pc.or_(pc.fill_null(pc.equal(previous["settings"], version), False), pc.and_(
            _made_with_crops(previous, crop_fingerprint), pc.equal(previous["status"], "rejected")))
    index = previous.schema.get_field_index("settings")
    return previous.set_column(index, "settings", pc.if_else(current, settings, previous["settings"]))


@dataclass(frozen=True)
class Renames:
    """The photos whose stored faces are named again (identities manifest rows), how many of their faces
    the head names from a stored embedding, and how many of the photos have a face that needs FaceNet."""

    photos: pa.Table
    from_embeddings: int = 0
    backbone_photos: int = 0


def _stored_faces_to_rename(plan: Plan, previous: pa.Table, crop_fingerprint: str, root: str,
                            embedder: str | None) -> Renames:
    """The manifest rows of the photos `plan` identifies again whose stored faces were cut as the
    current crops are and are all still in the shards: named again from those, not read, by the head
    alone where their embedding was made by `embedder`. A photo short of a stored face (a shard file
    lost) is read again instead."""
    again = pc.is_in(previous["path"], value_set=plan.resettled_paths)
    ok = pc.equal(previous["status"], "ok")
    candidates = previous.filter(pc.and_(pc.and_(again, ok), _made_with_crops(previous, crop_fingerprint)))
    if not candidates.num_rows:
        return Renames(candidates)
    stored = stored_faces(root, candidates, embedder)
    counted = zip(candidates["path"].to_pylist(), candidates["face_rows"].to_pylist())
    whole = pa.array([stored.per_photo.get(path, 0) == rows for path, rows in counted], pa.bool_())
    short = candidates.filter(pc.invert(whole))
    if short.num_rows:
        log.warning("%s lack stored faces the manifest counts (a shard file lost, such as one of run %s): "
                    "reading them again", plural(short.num_rows, "photo"), short["run_id"][0])
    photos = candidates.filter(whole)["path"].to_pylist()
    return Renames(candidates.filter(whole), sum(stored.embedded_per_photo.get(path, 0) for path in photos),
                   sum(stored.needs_backbone(path) for path in photos))


def _stage(config: Config, plan: Plan, renames: Renames, version: str, summary: IdentifySummary, staging: str,
           *, root: str) -> Staged:
    """Identify the faces of the photos in `plan`, staging identity rows and rejects under `staging`:
    `renames` from their stored faces, the others by reading them. Ray starts only when they need an
    actor pool (`commit.runs_in_driver`)."""
    storage.makedirs(root)  # so that the first run's check can find it on every node
    shared = {"input": config.input, "output": config.output, "identities": root}
    to_read = plan.to_process.filter(pc.invert(pc.is_in(plan.to_process["path"], value_set=renames.photos["path"])))
    if to_read.num_rows:
        from faceproc.identify.operators import IdentifyPipeline

        files = pa.table({"path": to_read["path"], "layout_error": pc.fill_null(to_read["layout_error"], "")})
        args = (config.output, config.identify.model, version, summary.run_id, storage.join(staging, "rejects"))
        summary.detected_in = stage_photos(files, IdentifyPipeline, args,
                                           config.preprocess, storage.join(staging, "faces"), config.ray_address,
                                           shared)
    if renames.photos.num_rows:
        summary.renamed_in = stage_renames(renames.photos, renames.backbone_photos, root, config.preprocess,
                                           storage.join(staging, "renamed"), config.ray_address, shared,
                                           out=config.output, model=config.identify.model, version=version,
                                           run_id=summary.run_id)
    folders = [(storage.join(staging, name), layout.identity_shards(root)) for name in ("faces", "renamed")]
    return read_staged(staging, folders, IDENTITY_SCHEMA, "photo_path", "photo_sha256")


def _count_staged(summary: IdentifySummary, renames: Renames, staged: Staged) -> None:
    renamed = pc.sum(pc.is_in(staged.rows["photo_path"], value_set=renames.photos["path"])).as_py() or 0
    summary.faces, summary.renamed_faces = staged.rows.num_rows - renamed, renamed
    summary.count_rejects(staged)


def _fill_live_counts(summary: IdentifySummary, root: str, manifest: pa.Table) -> None:
    photos: set[str] = set()
    people: collections.Counter[str] = collections.Counter()
    for table in iter_live_identities(root, manifest, ["photo_path", "person", "model_version"], batch_size=8192):
        photos.update(table["photo_path"].to_pylist())
        people.update(table["person"].to_pylist())
        summary.older_versions += table.num_rows - pc.sum(pc.equal(table["model_version"], summary.model_version)).as_py()
    summary.live_photos, summary.live_faces = len(photos), sum(people.values())
    summary.faces_by_person = dict(sorted(people.items()))
    summary.count_live_rejects(manifest)
