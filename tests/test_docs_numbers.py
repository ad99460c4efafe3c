"""Numbers the README states about a run are the recorded run's: what `make quick` decided.

The record is the text claims' verdicts of a fresh `make quick` (docs/reproductions/, dated, with its
commit in the matching .md). A change of the claims file makes the record stale, and this test says so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
QUICK_RECORD = REPO / "docs" / "reproductions" / "2026-12-07-quick-claims.csv"


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
