"""Numbers the README states about a run are the recorded run's: what `make quick` decided.

The record is the text claims' verdicts of a fresh `make quick` (docs/reproductions/, dated, with its
commit in the matching .md). A change of the claims file makes the record stale, and this test says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
QUICK_RECORD = REPO / "docs" / "reproductions" / "2026-12-08-quick-claims.csv"


def test_the_quick_record_covers_todays_claims():
    from arelbo.reporting.claims import load_claims

    recorded = pd.read_csv(QUICK_RECORD)
    ids = [claim["id"] for claim in load_claims()["claims"]]
    assert list(recorded["id"]) == ids, "the claims changed since the recorded make quick run: run it again"


def test_the_readme_says_what_make_quick_decided_as_its_recorded_run_did():
    rows = pd.read_csv(QUICK_RECORD)
    not_run = rows["verdict"].eq("NOT RUN")
    celeba = rows["id"].str.endswith("-celeba")
    inconclusive = rows["verdict"].eq("INCONCLUSIVE")
    counts = {
        "decided": int(rows["verdict"].isin(["PASS", "FAIL"]).sum()),
        "pass": int(rows["verdict"].eq("PASS").sum()),
        "celeba": int((not_run & celeba).sum()),
        "value": int((not_run & ~celeba).sum()),
        "unconverged": int((inconclusive & rows["measured_fail"]).sum()),
        "undecided": int((inconclusive & ~rows["measured_fail"]).sum()),
    }
    assert sum(counts.values()) - counts["pass"] == len(rows)  # every claim in one class
    assert rows.loc[inconclusive & ~rows["measured_fail"], "id"].str.match(r"t[15]-").all()  # Section 3's
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    expected = (
        f"`make quick` decided {counts['decided']} of the paper's {len(rows)} text claims "
        f"({counts['pass']} PASS, {counts['decided'] - counts['pass']} FAIL). NOT RUN: {counts['celeba']} "
        f"about CelebA and {counts['value']} comparing a value with the paper's. INCONCLUSIVE: "
        f"{counts['unconverged']} measured a FAIL on trainings that had not converged, and "
        f"{counts['undecided']} Section 3 trends"
    )
    assert expected in readme, expected


# A measured quantity: a time, a rate, or a ratio of times ("2.5× as long"; not a shape such as 5×5 or
# a claim's factor). A software's default ("30 s by default") is not a measurement.
MEASUREMENT = re.compile(
    r"(?<![\w.×])~?\d[\d,.]*\s?(?:s|min|h|ms|µs|job-hours|images/s|steps/s)\b(?! by default)"
    r"|(?<![\w.×])\d+(?:\.\d+)?×\s(?:faster|slower|as long|as fast|longer|shorter)"
)
DATE = re.compile(r"20\d\d-\d\d-\d\d")
# Where dated measurements live: a paragraph that cites one of these gives its numbers' provenance.
MEASUREMENT_RECORDS = re.compile(
    r"docs/engineering-notes\.md|engineering notes|docs/reproductions/|benchmarks/|tests/test_\w+\.py"
)


def _paragraphs(text: str):
    """(section heading, paragraph) for every paragraph outside code blocks."""
    for section in re.split(r"(?m)^(?=#{1,4} )", re.sub(r"(?ms)^```.*?^```", "", text)):
        heading = section.splitlines()[0] if section.startswith("#") else ""
        for paragraph in re.split(r"\n\s*\n", section):
            yield heading, section, paragraph


def test_every_measured_number_in_the_docs_says_when_it_was_measured():
    """A time, rate or speed-up in the user documents is a dated measurement (a date in its paragraph,
    or a citation of the engineering notes, a reproduction record, a benchmark or the test that checks
    it); in the engineering
    notes, whose sections are dated measurement records, a date in its section."""
    undated = []
    for document in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]:
        notes = document.name == "engineering-notes.md"
        for heading, section, paragraph in _paragraphs(document.read_text(encoding="utf-8")):
            found = MEASUREMENT.findall(paragraph)
            context = section if notes else paragraph
            if found and not DATE.search(context) and not (not notes and MEASUREMENT_RECORDS.search(paragraph)):
                undated.append(f"{document.name} [{heading[:40]}] {found[:3]}: {paragraph[:80]!r}")
    assert not undated, "\n".join(undated)
