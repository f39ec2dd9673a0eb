"""The hostile input corpus (tests/bad_inputs/): malformed specs and data files, each named in expected.json with
the error it must produce. Each gives one ERROR line naming the file and the problem, exit code 2, no
traceback, and nothing under trials/ or reports/.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.__main__ import main

from ..conftest import ROOT

CORPUS = ROOT / "tests" / "bad_inputs"
EXPECTED: dict[str, str] = json.loads((CORPUS / "expected.json").read_text())
SPECS = sorted(k for k in EXPECTED if k.startswith("specs/"))
DATA = sorted(k for k in EXPECTED if k.startswith("data/"))


def data_spec(data_file: Path, folder: Path) -> Path:
    """A valid spec whose only problem is its data file (the tiny model, nothing downloaded)."""
    spec = folder / "spec.yaml"
    fmt = "orca" if data_file.name.startswith("orca_") else "auto"  # orca_*: checked against a format set by name
    spec.write_text(f"name: hostile\nmodel: {{name_or_path: builtin:tiny-mistral}}\n"
                    f"data: {{path: {json.dumps(str(data_file))}, format: {fmt}}}\n")  # fmt: skip
    return spec


def test_the_corpus_is_complete() -> None:
    assert len(SPECS) >= 30 and len(DATA) >= 10
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*")}
    assert on_disk == set(EXPECTED)  # every file has its expected error, every expected error its file


def check(code: int, out: str, err: str, named: Path, expected: str, work: Path) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, lines  # one problem, one line
    assert lines[0].startswith(f"ERROR: {named}: "), lines[0]  # names the file
    assert expected in lines[0], lines[0]  # and the problem
    assert "Traceback" not in out + err
    assert not (work / "trials").exists() and not (work / "reports").exists()  # nothing written


@pytest.mark.parametrize("name", SPECS, ids=[Path(s).stem for s in SPECS])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "launch"])
def test_malformed_spec(name: str, dry: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    path = CORPUS / name
    code = main(["launch", str(path), *(["--dry-run"] if dry else [])])
    out, err = capsys.readouterr()
    check(code, out, err, path, EXPECTED[name], tmp_path)
    assert out == ""  # rejected before anything is described
    assert list(tmp_path.iterdir()) == []  # nothing at all written where it ran


@pytest.mark.parametrize("name", DATA, ids=[Path(d).name for d in DATA])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "launch"])
def test_malformed_data_file(name: str, dry: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    spec = data_spec(CORPUS / name, tmp_path)
    monkeypatch.chdir(work)
    code = main(["launch", str(spec), *(["--dry-run"] if dry else [])])
    out, err = capsys.readouterr()
    check(code, out, err, CORPUS / name, EXPECTED[name], work)


BOMBS = ["specs/alias_bomb.yaml", "specs/merge_key_bomb.yaml", "specs/very_deep_nesting.yaml", "specs/python_tag.yaml",
         "data/nested_bomb.json", "data/binary_junk.jsonl"]  # fmt: skip


@pytest.mark.parametrize("name", BOMBS)
def test_the_real_command_under_a_memory_limit(name: str, tmp_path: Path) -> None:
    """The bombs through `python -m sweeper` with 2 GiB of address space: refused fast, with no traceback."""
    path = CORPUS / name
    spec = path if name.startswith("specs/") else data_spec(path, tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=work, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert time.monotonic() - started < 60
    check(proc.returncode, proc.stdout, proc.stderr, path, EXPECTED[name], work)
    assert not Path("/tmp/sweeper-pwned").exists()  # the python tag ran nothing
