"""The report's picture sections: validation photos and crops, augmentation, rejects, misclassified.

Faces are the live rows `RunData` holds; crop bytes are fetched through `images.load_crops` only for
the rows a section shows, and every list is cut at its limit with a note that says so.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from faceproc.core.schema import RejectReason
from faceproc.evaluate.report.data import RunData
from faceproc.evaluate.report.images import THUMB_SIDE, crop_thumbnail, load_crops, photo_thumbnail
from faceproc.evaluate.report.markup import basename, e, img_tag, note, shown_note
from faceproc.evaluate.tables import fmt


def _crops(data: RunData, split: str, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], bytes | None]:
    """PNG bytes of the `wanted` live rows of `split`, each read once per page: the photo, crop and
    misclassified sections show the same validation crops."""
    read = data.crops_read.setdefault(split, {})
    missing = wanted - read.keys()
    if missing:
        found = load_crops(data.out_uri, split, data.manifest, missing)
        read.update({key: found.get(key) for key in missing})
    return read


def _model_verdicts(data: RunData) -> dict[str, list[dict[str, Any]]]:
    """Predictions of ok models grouped by source photo path."""
    ok_models = set(data.ok_models())
    order = {m: i for i, m in enumerate(data.models)}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in data.predictions or []:
        if str(r.get("model")) in ok_models:
            out[str(r.get("source_path"))].append(r)
    for rows in out.values():
        rows.sort(key=lambda r: order.get(str(r.get("model")), 99))
    return out


def _wrong(prediction: dict[str, Any]) -> bool:
    return prediction.get("predicted") != prediction.get("label")


def _chips(preds: list[dict[str, Any]]) -> str:
    """One chip per model: a tick, or a cross and what it said."""
    chips = []
    for p in preds:
        right = not _wrong(p)
        conf = p.get("confidence")
        conf_s = f" {conf:.2f}" if isinstance(conf, (int, float)) else ""
        if right:
            chips.append(
                f'<span class="chip good" title="{e(p["model"])}: {e(p.get("predicted"))}{conf_s}">✓ {e(p["model"])}</span>'
            )
        else:
            chips.append(
                f'<span class="chip bad" title="{e(p["model"])}: {e(p.get("predicted"))}{conf_s}">✗ {e(p["model"])} → {e(p.get("predicted"))}</span>'
            )
    return f'<div class="chips">{"".join(chips)}</div>' if chips else ""


def photos_section(data: RunData, max_photos: int) -> str:
    """The live validation photos with their face box, beside the crop the models saw (aligned or
    the margin crop), and every model's verdict."""
    originals = [r for r in data.val_faces if int(r.get("augment_index") or 0) == 0]
    if not originals:
        return note("No validation faces yet.")
    verdicts = _model_verdicts(data)
    shown = originals[:max_photos]
    crops = _crops(data, "val", {(str(r.get("source_path")), 0) for r in shown})
    cards = []
    for r in shown:
        path = str(r.get("source_path"))
        preds = verdicts.get(path, [])
        wrong = any(_wrong(p) for p in preds)
        src, why = photo_thumbnail(path, r.get("box"), wrong=wrong)
        csrc, cwhy = crop_thumbnail(crops.get((path, 0)))
        faces = int(r.get("faces_found") or 1)
        meta = f"detection {fmt(r.get('confidence'), 3)} · {'aligned' if r.get('aligned') else 'margin crop'}"
        if faces > 1:
            meta += f' · <span class="warn">{faces} faces found</span>'
        cards.append(
            f'<figure class="photo{" wrong" if wrong else ""}"><div class="mis-imgs">'
            f'{img_tag(src, basename(path), why, "thumb")}{img_tag(csrc, "face crop", cwhy, "face small")}</div>'
            f'<figcaption><div class="who">{e(r.get("label"))}</div>'
            f'<div class="file" title="{e(path)}">{e(basename(path))}</div>'
            f'<div class="meta">{meta}</div>{_chips(preds)}</figcaption></figure>'
        )
    more = shown_note(len(originals), max_photos, "validation photos")
    return f'<div class="grid photos">{"".join(cards)}</div>{more}'


def crops_section(data: RunData, max_photos: int) -> str:
    """The face crops of the live validation rows, as the models see them."""
    rows = data.val_faces[:max_photos]
    if not rows:
        return note("No validation crops yet.")
    wanted = {(str(r["source_path"]), int(r.get("augment_index") or 0)) for r in rows}
    crops = _crops(data, "val", wanted)
    cells = []
    for r in rows:
        key = (str(r["source_path"]), int(r.get("augment_index") or 0))
        src, why = crop_thumbnail(crops.get(key))
        cells.append(
            f'<figure class="crop">{img_tag(src, r.get("label", ""), why, "face")}'
            f'<figcaption><div class="who">{e(r.get("label"))}</div>'
            f'<div class="file" title="{e(key[0])}">{e(basename(key[0]))}</div></figcaption></figure>'
        )
    return f'<div class="grid crops">{"".join(cells)}</div>{shown_note(len(data.val_faces), max_photos, "validation crops")}'


def augment_section(data: RunData, examples: int) -> str:
    """A few training photos, one per person first, beside their original and augmented crops."""
    if not data.train_faces:
        return note("No training faces yet.")
    by_source: dict[str, dict[str, Any]] = {}
    for r in data.train_faces:
        entry = by_source.setdefault(str(r["source_path"]), {"label": r.get("label"), "augs": set(), "box": None})
        aug = int(r.get("augment_index") or 0)
        entry["augs"].add(aug)
        if aug == 0:
            entry["box"] = r.get("box")
    candidates = sorted(
        (path for path, v in by_source.items() if 0 in v["augs"] and len(v["augs"]) > 1),
        key=lambda p: (str(by_source[p]["label"]), p),
    )
    if not candidates:
        return note("No stored augmented copies (preprocess.augment_copies = 0: training draws new variants online, train.online_augment), or no training faces.")
    # one example per person first, so the examples show different people
    chosen: list[str] = []
    seen_people: set[str] = set()
    for path in candidates:
        if by_source[path]["label"] not in seen_people:
            chosen.append(path)
            seen_people.add(by_source[path]["label"])
        if len(chosen) == examples:
            break
    wanted = {(p, a) for p in chosen for a in sorted(by_source[p]["augs"])[:4]}
    crops = _crops(data, "train", wanted)
    rows = []
    for path in chosen:
        info = by_source[path]
        src, why = photo_thumbnail(path, info["box"], side=THUMB_SIDE)
        items = [
            f'<figure class="aug-src">{img_tag(src, basename(path), why, "thumb")}<figcaption>source photo</figcaption></figure>'
        ]
        for aug in sorted(info["augs"])[:4]:
            csrc, cwhy = crop_thumbnail(crops.get((path, aug)))
            cap = "original crop (0)" if aug == 0 else f"augmented #{aug}"
            items.append(
                f'<figure class="crop">{img_tag(csrc, cap, cwhy, "face")}<figcaption>{e(cap)}</figcaption></figure>'
            )
        rows.append(
            f'<div class="card aug"><h3>{e(info["label"])}</h3><div class="file muted" title="{e(path)}">{e(basename(path))}</div>'
            f'<div class="aug-row">{"".join(items)}</div></div>'
        )
    return "".join(rows)


def rejects_section(data: RunData, max_rejects: int) -> str:
    """Every live reject with a preview, where it was and why it gave no face row."""
    if data.rejects is None:
        return note("No rejects file yet." if data.manifest is not None
                    else "No published manifest to say which rejects are live.")
    if not data.rejects:
        return note("None: every input file produced a face.")
    counts = Counter(str(r.get("reason")) for r in data.rejects)
    summary = " ".join(f'<span class="chip neutral">{e(k)} × {v}</span>' for k, v in counts.most_common())
    rows = []
    ordered = sorted(data.rejects, key=lambda r: (str(r.get("reason")), str(r.get("path"))))
    for r in ordered[:max_rejects]:
        path = str(r.get("path"))
        # a photo over preprocess.max_pixels is not decoded again for its thumbnail
        src, why = ((None, "too large to preview") if r.get("reason") == RejectReason.TOO_LARGE
                    else photo_thumbnail(path, None, side=120))
        where = " / ".join(e(x) for x in (r.get("split"), r.get("label")) if x)
        rows.append(
            f'<tr><td class="rthumb">{img_tag(src, basename(path), f"no preview: {why}", "rimg")}</td>'
            f'<td><div class="file strong" title="{e(path)}">{e(basename(path))}</div>'
            f'<div class="muted small path">{e(path)}</div></td>'
            f"<td>{where or '<span class=muted>–</span>'}</td>"
            f'<td><span class="chip neutral">{e(r.get("reason"))}</span></td>'
            f'<td class="detail">{e(r.get("detail"))}</td></tr>'
        )
    return (
        f'<div class="chips summary">{summary}</div><div class="scroll"><table class="data rejects">'
        "<thead><tr><th>preview</th><th>file</th><th>split / person</th><th>reason</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>{shown_note(len(data.rejects), max_rejects, 'rejects')}"
    )


def misclassified_section(data: RunData, max_photos: int) -> str:
    """Photos at least one model got wrong, most-missed first, with what each model said."""
    if not data.predictions:
        return note("No predictions yet.")
    verdicts = _model_verdicts(data)
    boxes = {
        str(r["source_path"]): r.get("box") for r in data.val_faces if int(r.get("augment_index") or 0) == 0
    }
    wrong_paths = sorted(
        (p for p, preds in verdicts.items() if any(_wrong(x) for x in preds)),
        key=lambda p: (
            -sum(_wrong(x) for x in verdicts[p]),
            str(verdicts[p][0].get("label")),
            p,
        ),
    )
    if not wrong_paths:
        return note("None: every model classified every validation face correctly.")
    shown = wrong_paths[:max_photos]
    crops = _crops(data, "val", {(p, 0) for p in shown})
    cards = []
    for path in shown:
        preds = verdicts[path]
        label = preds[0].get("label")
        src, why = photo_thumbnail(path, boxes.get(path), wrong=True, side=160)
        csrc, cwhy = crop_thumbnail(crops.get((path, 0)))
        trs = []
        for p in preds:
            right = not _wrong(p)
            probs = dict(p.get("probabilities") or {})
            p_true = probs.get(label)
            trs.append(
                f'<tr class="{"good" if right else "bad"}"><th>{e(p.get("model"))}</th>'
                f"<td>{'✓' if right else '✗'} {e(p.get('predicted'))}</td>"
                f'<td class="num">{fmt(p.get("confidence"), 2)}</td>'
                f'<td class="num muted">{fmt(p_true, 2)}</td></tr>'
            )
        n_wrong = sum(_wrong(p) for p in preds)
        cards.append(
            f'<div class="card mis"><div class="mis-imgs">{img_tag(src, basename(path), why, "thumb")}'
            f"{img_tag(csrc, 'face crop', cwhy, 'face small')}</div>"
            f'<div class="mis-body"><div class="who">{e(label)} <span class="muted small">· wrong in {n_wrong} of {len(preds)} models</span></div>'
            f'<div class="file muted small" title="{e(path)}">{e(basename(path))}</div>'
            f'<table class="verdicts"><thead><tr><th>model</th><th>said</th><th class="num">conf.</th><th class="num">p(true)</th></tr></thead>'
            f"<tbody>{''.join(trs)}</tbody></table></div></div>"
        )
    return f'<div class="cards mis-grid">{"".join(cards)}</div>{shown_note(len(wrong_paths), max_photos, "misclassified photos")}'
