"""The public DPO curves in benchmarks/curves/ (Training-results tables of public model cards and READMEs, turned into
TRL log_history files): every file the index lists parses with replay's own loader into a usable curve, names its
source and licence, and the groups the index calls sweeps really have several members."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from sweeper.prune.curves import curves_from_log_history, log_history_files

from ..conftest import ROOT

CURVES = ROOT / "benchmarks" / "curves"
INDEX = json.loads((CURVES / "index.json").read_text(encoding="utf-8"))
METRIC = "eval_rewards/margins"


def test_the_index_lists_exactly_the_files_in_the_folder() -> None:
    assert sorted(e["file"] for e in INDEX) == [p.name for p in log_history_files(CURVES)]


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_each_file_parses_into_a_finite_curve_with_source_and_license(entry: dict) -> None:
    path = CURVES / entry["file"]
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("source", "license", "model", "log_history"):
        assert data.get(key), f"{entry['file']}: no {key!r}"
    assert data["source"] == entry["source"] and data["license"] == entry["license"]
    curve = curves_from_log_history(path, METRIC)
    assert len(curve.points) >= 3, entry["file"]
    xs = [x for x, _ in curve.points]
    assert xs == sorted(set(xs)), entry["file"]
    assert all(math.isfinite(v) for _, v in curve.points), entry["file"]
    assert len(curve.points) == entry["n_eval_rows"]


def test_sweep_groups_have_several_members_and_say_what_varies() -> None:
    sizes = Counter(e["group"] for e in INDEX if e["group"] != "single")
    assert len(sizes) >= 3 and all(n >= 2 for n in sizes.values()), sizes
    assert all(e["varies"] for e in INDEX)
