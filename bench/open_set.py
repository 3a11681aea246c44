"""The unknown-person threshold on real faces: leave-one-person-out calibration against the old rule.

Reads the original (augment_index 0) train and val crops of a preprocessed OUT, embeds them with
FaceNet in this process, and for each target false-accept rate prints the chosen threshold, its
estimated false-accept / false-reject rates (on the train faces), the share of val faces accepted
as known, and the share of val faces of a person left out of training that come out `unknown`
(each person in turn is the stranger: centroids and threshold from the other four). The baseline
is the rule before calibration: the 0.99 quantile of the train faces' distances to their own centroid.

    python bench/open_set.py --output OUT                # OUT from `faceproc preprocess` (defaults)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def faces(out: str, split: str) -> tuple[np.ndarray, list[str]]:
    from faceproc.core.images import decode_png
    from faceproc.core.shards import iter_live_faces

    images, labels = [], []
    for table in iter_live_faces(out, split, ["image", "label", "augment_index"]):
        for row in table.to_pylist():
            if row["augment_index"] == 0:
                images.append(decode_png(row["image"]))
                labels.append(row["label"])
    return np.stack(images).astype(np.float32), labels


def own_quantile_threshold(embeddings: np.ndarray, labels: list[str], table: dict) -> float:
    from faceproc.inference.openset import l2_normalize

    cents = np.asarray(table["centroids"])
    own = cents[[table["classes"].index(label) for label in labels]]
    return float(np.quantile(np.linalg.norm(l2_normalize(embeddings) - own, axis=1), 0.99))


def evaluate(train, train_labels, val, val_labels, rule) -> dict:
    """rule(embeddings, labels) -> (table, threshold); val acceptance and left-out strangers."""
    from faceproc.inference.openset import nearest_centroid

    table, threshold = rule(train, train_labels)
    names, distances = nearest_centroid(val, table)
    unknown, accepted = [], []
    for person in sorted(set(train_labels)):
        keep = [i for i, label in enumerate(train_labels) if label != person]
        held_table, held_threshold = rule(train[keep], [train_labels[i] for i in keep])
        _, held = nearest_centroid(val, held_table)
        stranger = np.array([label == person for label in val_labels])
        unknown += list(held[stranger] > held_threshold)
        accepted += list(held[~stranger] <= held_threshold)
    calibration = table.get("calibration", {})
    return {"threshold": threshold, "far": calibration.get("estimated_far"), "frr": calibration.get("estimated_frr"),
            "val_accepted": float(np.mean(distances <= threshold)),
            "val_named": float(np.mean([n == label for n, label in zip(names, val_labels)])),
            "strangers_unknown": float(np.mean(unknown)), "strangers": len(unknown),
            "known_accepted_lopo": float(np.mean(accepted))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="a preprocessed OUT")
    parser.add_argument("--weights", default=str(ROOT / "models" / "facenet_keras.h5"))
    parser.add_argument("--targets", default="0.01,0.05")
    args = parser.parse_args(argv)

    from faceproc.inference.openset import compute_centroids
    from faceproc.models.facenet_weights import load_facenet_backbone

    backbone = load_facenet_backbone(args.weights)
    (train_x, train_labels), (val_x, val_labels) = faces(args.output, "train"), faces(args.output, "val")
    train, val = backbone.predict(train_x, verbose=0), backbone.predict(val_x, verbose=0)

    def calibrated(far: float):
        def rule(embeddings, labels):
            table = compute_centroids(embeddings, labels, far)
            return table, table["threshold"]
        return rule

    def baseline(embeddings, labels):
        table = compute_centroids(embeddings, labels, 0.01)
        return table, own_quantile_threshold(embeddings, labels, table)

    rules = [("own-distance 0.99 quantile (before)", baseline)]
    rules += [(f"leave-one-person-out, unknown_far {far}", calibrated(float(far))) for far in args.targets.split(",")]
    print(f"{len(train_labels)} train faces, {len(val_labels)} val faces, {len(set(train_labels))} people")
    print("| rule | threshold | est. FAR (train) | est. FRR (train) | val accepted | val nearest centroid right | "
          "left-out strangers unknown | known accepted (left-out runs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rule in rules:
        r = evaluate(train, train_labels, val, val_labels, rule)
        far = "–" if r["far"] is None or name.startswith("own") else f"{r['far']:.3f}"
        frr = "–" if r["frr"] is None or name.startswith("own") else f"{r['frr']:.3f}"
        print(f"| {name} | {r['threshold']:.3f} | {far} | {frr} | {r['val_accepted']:.2f} | {r['val_named']:.2f} | "
              f"{r['strangers_unknown']:.2f} of {r['strangers']} | {r['known_accepted_lopo']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
