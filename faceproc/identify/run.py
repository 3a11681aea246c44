"""`faceproc identify`: who is in each photo of a tree of unlabelled photos, as a Ray Data job.

list (any layout) -> plan against the identities manifest (a photo whose listing entry is unchanged and
that this model version already identified is not read) -> Arrow blocks of the photos to do ->
`IdentifyPipeline` actors (decode, every face, training's crop, the model and its open-set check) ->
staged Parquet -> publish: shards moved into place, rejects, then the manifest (the commit) -> report.

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
            *([("identified again (model changed)", self.reidentified)] if self.reidentified else []),
            ("photos read this run", self.processed),
            *self.detection_lines(),
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
    from faceproc.inference.crop_settings import training_preprocess

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
    plan = plan_run(listing, _as_judged(previous, version, config.identify.keep_old_results), version)
    summary.count_plan(found.files.num_rows, found.skipped, plan)
    summary.reidentified = plan.resettled
    if plan.resettled:
        log.info("%d photos were identified by another model or model version: identifying them again with %s "
                 "version %s (--keep-old-results keeps the older results)", plan.resettled, name, version[:12])

    manifest = run_staged(root, summary.run_id, listing, plan, previous,
                          stage=functools.partial(_stage, config, plan, version, summary, root=root),
                          on_staged=functools.partial(_count_staged, summary))
    _fill_live_counts(summary, root, manifest)
    summary.seconds = time.monotonic() - started
    write_identities_report(layout.identities_report(out, root), root, manifest, summary)
    if plan.has_work:
        storage.write_json_atomic(layout.run_record(root, summary.run_id, "identify"),
                                  {**summary.to_dict(), "config": config.to_dict()})
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


def _as_judged(previous: pa.Table, version: str, keep_old_results: bool) -> pa.Table:
    """The manifest as the plan must see it: with `keep_old_results`, every photo counts as identified
    by the current version, so only new and changed photos are read."""
    if not keep_old_results:
        return previous
    index = previous.schema.get_field_index("settings")
    return previous.set_column(index, "settings", pa.array([version] * previous.num_rows, pa.string()))


def _stage(config: Config, plan: Plan, version: str, summary: IdentifySummary, staging: str, *, root: str) -> Staged:
    """Identify the faces of the photos in `plan`, staging identity rows and rejects under `staging`;
    Ray starts only when they need the actor pool (`stage_photos`)."""
    if plan.to_process.num_rows:
        from faceproc.identify.operators import IdentifyPipeline

        storage.makedirs(root)  # so that the first run's check can find it on every node
        files = pa.table({"path": plan.to_process["path"],
                          "layout_error": pc.fill_null(plan.to_process["layout_error"], "")})
        rejects = storage.join(staging, "rejects")
        args = (config.output, config.identify.model, version, summary.run_id, rejects)
        summary.detected_in = stage_photos(
            files, IdentifyPipeline, args, config.preprocess, storage.join(staging, "faces"), config.ray_address,
            {"input": config.input, "output": config.output, "identities": root})
    folders = [(storage.join(staging, "faces"), layout.identity_shards(root))]
    return read_staged(staging, folders, IDENTITY_SCHEMA, "photo_path", "photo_sha256")


def _count_staged(summary: IdentifySummary, staged: Staged) -> None:
    summary.faces = staged.rows.num_rows
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
