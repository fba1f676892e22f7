"""The nightly inbox finds every file the ingest commands accept, whatever the case of its name."""

from __future__ import annotations

from pathlib import Path

from settlement.inbox import pending_files


def test_inbox_finds_every_accepted_name(tmp_path: Path) -> None:
    names = {
        "customers": ["customers.csv", "CUSTOMERS.CSV", "Accounts.Csv"],
        "prices": [
            "PRICE_AND_DEMAND_202401_NSW1.csv",
            "PRICE_AND_DEMAND_202402_NSW1.CSV.gz",
            "PRICE_AND_DEMAND_202403_SA1.gz",
            "PUBLIC_DISPATCHIS_202404.ZIP",
            "prices.csv.GZ",
        ],
        "meter": ["NEM12_a.csv", "NEM12_B.CSV", "nem12_c.zip", "NEM12_D.Zip"],
    }
    for kind, files in names.items():
        (tmp_path / kind).mkdir()
        for name in files:
            (tmp_path / kind / name).write_text("x")
        (tmp_path / kind / "README.txt").write_text("not an input")
    found = pending_files(tmp_path)
    assert {k: sorted(p.name for p in v) for k, v in found.items()} == {
        k: sorted(v) for k, v in names.items()
    }
