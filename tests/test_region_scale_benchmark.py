"""benchmarks/region.py --scale runs end to end on a tiny seeded catalog and finds the photos queried."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_region_scale_benchmark_reports_latency_and_finds_the_query_photo(tmp_path: Path) -> None:
    command = [sys.executable, "benchmarks/region.py", "--scale", "250", "--queries", "8", "--per-candidate"]
    done = subprocess.run(
        [*command, "--no-forward", "--json", "--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # 64,000 cells: past the 50,000 where the indexer switches the patch index to IVF-PQ.
    assert report["photos"] == 250 and report["cells"] == 64_000
    assert report["patch_index"].startswith("IVF") and report["patch_index"].endswith(",PQ32np")
    assert report["queries"] == 8 and report["forward_pass_ms"] is None
    assert set(report["modes"]) == {"batched", "one by one", "batched, query scales"}
    for row in report["modes"].values():
        assert 0 < row["median_ms"] <= row["p95_ms"]
        assert row["candidates_per_s"] > 0
        assert set(row["stage_ms"]) == {"patch index search", "candidate ranking", "grid fetch", "re-ranking"}
        # Each query is a box of a stored photo's own cells (plus noise): that photo comes first.
        assert row["found_top1"] == 1.0
