"""Evaluation sets by stratified sampling without weights (paper section 4.2 and appendix E).

For one model: bucket the candidate pool images by the model's probability into 10 strata,
``[0, 0.1) ... [0.8, 0.9), [0.9, 1.0]``, and take from each the 20 images whose image URL has the
lowest SipHash-2-4 under a fixed key. The hash is a deterministic pseudorandom order, so models
that score an image into the same stratum tend to pick the same images: the sets of several model
versions overlap, and merging them costs the user fewer ratings. Images used for training are
never candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import siphashc
from numpy.typing import NDArray

#: The fixed SipHash key (16 bytes). Changing it changes every evaluation set.
SIPHASH_KEY = b"agile-modeling:e"
NUM_STRATA = 10
PER_STRATUM = 20


def url_hashes(uris: Sequence[str], key: bytes = SIPHASH_KEY) -> NDArray[np.uint64]:
    """``(n,)`` uint64 SipHash-2-4 of each URI's UTF-8 bytes under ``key``."""
    if len(key) != 16:
        raise ValueError("a SipHash key is 16 bytes")
    return np.fromiter((siphashc.siphash(key, u.encode("utf-8")) for u in uris), dtype=np.uint64, count=len(uris))


def strata_of(probabilities: NDArray[np.floating[Any]]) -> NDArray[np.int64]:
    """``(n,)`` stratum index 0..9 of each probability: ``floor(10 p)``, with 1.0 in the last stratum."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError("probabilities must lie in [0, 1]")
    return np.minimum((p * NUM_STRATA).astype(np.int64), NUM_STRATA - 1)


@dataclass(frozen=True)
class StratifiedSample:
    """One model's evaluation images.

    Attributes:
        ids: ``(m,)`` pool ids, stratum by stratum, lowest hash first within each.
        strata: ``(m,)`` the stratum of each.
        available: ``(10,)`` how many candidates each stratum had (fewer than 20 means all were taken).
    """

    ids: NDArray[np.int64]
    strata: NDArray[np.int64]
    available: NDArray[np.int64]


def stratified_sample(
    probabilities: NDArray[np.floating[Any]],
    hashes: NDArray[np.uint64],
    exclude: Sequence[int] | NDArray[np.integer[Any]] = (),
    per_stratum: int = PER_STRATUM,
) -> StratifiedSample:
    """The ``per_stratum`` lowest-hash images of every stratum of one model's scores.

    Args:
        probabilities: ``(n,)`` the model's probability for every pool image.
        hashes: ``(n,)`` uint64 :func:`url_hashes` of every pool image.
        exclude: pool ids that may not be chosen (the images used for training).
        per_stratum: images per stratum (20 in the paper).
    """
    probabilities = np.asarray(probabilities)
    hashes = np.asarray(hashes, dtype=np.uint64)
    if probabilities.shape != hashes.shape or probabilities.ndim != 1:
        raise ValueError(f"probabilities {probabilities.shape} and hashes {hashes.shape} must be the same (n,)")
    strata = strata_of(probabilities)
    candidate = np.ones(len(probabilities), dtype=bool)
    candidate[np.asarray(exclude, dtype=np.int64)] = False
    ids, chosen_strata, available = [], [], np.zeros(NUM_STRATA, dtype=np.int64)
    for s in range(NUM_STRATA):
        members = np.flatnonzero(candidate & (strata == s))
        available[s] = len(members)
        order = np.lexsort((members, hashes[members]))[:per_stratum]  # by hash, ties by id
        ids.append(members[order])
        chosen_strata.append(np.full(len(order), s))
    return StratifiedSample(
        np.concatenate(ids).astype(np.int64), np.concatenate(chosen_strata).astype(np.int64), available
    )


@dataclass
class EvaluationSet:
    """The merged evaluation images of several model versions.

    Attributes:
        chosen_by: ``{pool id: names of the model versions whose sample contains it}``.
    """

    chosen_by: dict[int, list[str]] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return sorted(self.chosen_by)

    def add(self, version: str, sample: StratifiedSample) -> int:
        """Merge one model's sample; returns how many images were new to the set."""
        new = 0
        for image_id in sample.ids.tolist():
            if image_id not in self.chosen_by:
                self.chosen_by[image_id] = []
                new += 1
            if version not in self.chosen_by[image_id]:
                self.chosen_by[image_id].append(version)
        return new


def build_evaluation_set(
    probabilities_by_version: Mapping[str, NDArray[np.floating[Any]]],
    hashes: NDArray[np.uint64],
    exclude: Sequence[int] | NDArray[np.integer[Any]] = (),
    per_stratum: int = PER_STRATUM,
) -> EvaluationSet:
    """One stratified sample per model version (``{name: (n,) probabilities}``), merged."""
    merged = EvaluationSet()
    for version, probabilities in probabilities_by_version.items():
        merged.add(version, stratified_sample(probabilities, hashes, exclude, per_stratum))
    return merged
