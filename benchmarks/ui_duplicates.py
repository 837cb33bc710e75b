"""The Duplicates page at scale: paging through 100,000 groups without loading them all.

Fills a real SQLite catalog with seeded vectors that make ``groups`` groups (each original has one
near-copy, cosine about 0.99, and every tenth an exact copy besides), then drives the Streamlit page with
``AppTest`` (the app's own script, in this process, without a browser): the first view (grouping every
photo, then one page), a page deep in the list, and "Next". A page reads the catalog rows and makes the
thumbnails and contact sheets of its own 20 groups only (the synthetic photos have no files: their tiles
are drawn grey, after a failed read each). The browser's share of a page, about the same for every page,
is measured by ``tests/test_ui_browser.py``.

    python -m benchmarks.ui_duplicates 100000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.scale import clustered
from benchmarks.synthetic_catalog import fill_catalog, synthetic_config

APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"
THRESHOLD = 0.95
EXACT_EVERY = 10


def planted_groups(groups: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Vectors of ``groups`` originals, one near-copy of each and an exact copy of every tenth, and the
    row whose bytes each row has (itself, or the original it copies exactly)."""
    originals = clustered(groups, seed, centres=max(16, groups // 1_000))
    rng = np.random.default_rng(seed + 1)
    noisy = originals + 0.006 * rng.standard_normal(originals.shape, dtype=np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    exact = np.arange(0, groups, EXACT_EVERY)
    vectors = np.concatenate([originals, noisy, originals[exact]])
    same_bytes = np.arange(len(vectors), dtype=np.int64)
    same_bytes[2 * groups :] = exact
    return vectors.astype(np.float32), same_bytes


def _rss_mib(field: str = "VmRSS:") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(groups: int) -> dict[str, Any]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    real_get_option = st.get_option
    # AppTest starts no server: say it is served on loopback, as `loupe ui` serves it.
    st.get_option = lambda key: "127.0.0.1" if key == "server.address" else real_get_option(key)
    vectors, same_bytes = planted_groups(groups)
    with tempfile.TemporaryDirectory(prefix="loupe-ui-bench-") as workdir:
        (Path(workdir) / "data").mkdir()
        config = synthetic_config(Path(workdir) / "data")
        started = time.perf_counter()
        fill_catalog(config, vectors, same_bytes).close()
        fill_s = time.perf_counter() - started
        photos = len(vectors)
        del vectors
        settings = Path(workdir) / "ui.yaml"
        settings.write_text(f"model:\n  weights: random\nsearch:\n  near_duplicate_threshold: {THRESHOLD}\n")
        os.environ["LOUPE_DATA_DIR"] = str(config.data_dir)
        os.environ["LOUPE_CONFIG"] = str(settings)
        at = AppTest.from_file(str(APP), default_timeout=3_600)
        at.run()
        before = _rss_mib()
        started = time.perf_counter()
        at.switch_page("views/duplicates.py").run()
        first_view_s = time.perf_counter() - started
        after = _rss_mib()
        shown = [md.value for md in at.markdown if md.value.startswith("**Group ")]
        found = len(at.session_state["duplicates-groups"])
        pages = -(-found // 20)
        started = time.perf_counter()
        at.number_input(key="duplicates-page").set_value(pages // 2).run()
        deep_page_s = time.perf_counter() - started
        deep = [md.value.split(" · ")[0] for md in at.markdown if md.value.startswith("**Group ")]
        started = time.perf_counter()
        at.button(key="duplicates-next-top").click().run()
        next_page_s = time.perf_counter() - started
        problems = [str(e.value) for e in at.exception]
    return {
        "photos": photos,
        "groups": found,
        "pages": pages,
        "fill_and_index_s": round(fill_s, 1),
        "first_view_s": round(first_view_s, 2),  # grouping every photo, then page 1
        "deep_page_s": round(deep_page_s, 2),  # page pages/2: its rows, thumbnails and sheets only
        "next_page_s": round(next_page_s, 2),
        "groups_on_a_page": len(shown),
        "deep_page_first_group": deep[0] if deep else None,
        "session_groups_mib": round(after - before, 1),  # RSS grown by the first view: the groups kept
        "peak_rss_mib": round(_rss_mib("VmHWM:"), 1),
        "exceptions": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", type=int, nargs="?", default=100_000, help="duplicate groups to make")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # one warning per missing synthetic photo otherwise
    run = measure(args.groups)
    if args.json:
        print(json.dumps(run, indent=2))
    else:
        print("  ".join(f"{key} {value}" for key, value in run.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
