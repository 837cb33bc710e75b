"""Loupe in the browser: ``loupe ui [--data-dir DIR]``, or ``streamlit run ui/app.py [-- --data-dir DIR]``.

This file only lays out the collection header and the pages; the work happens in the search engine. It
first checks where it is served: on an address other computers can reach it shows no photo, unless the
config allows remote serving (``ui/serving.py``), however the server was started.
"""

from __future__ import annotations

import streamlit as st

from core.report import RANDOM_WEIGHTS_WARNING
from ui.serving import EXPOSING_HELP, remote_serving_refusal
from ui.state import engine_or_none, resolve_config, status

st.set_page_config(page_title="Loupe", page_icon=":material/image_search:", layout="wide")

config = resolve_config()
refusal = remote_serving_refusal(st.get_option("server.address"), config.ui.allow_remote)
if refusal is not None:
    st.title("Loupe")
    st.error(refusal, icon=":material/lock:")
    st.markdown(EXPOSING_HELP)
    st.stop()

engine, problem = engine_or_none(config)
if engine is not None:
    facts = status(config)
    st.title("Loupe")
    recall = facts["recall_at_10"]
    st.caption(
        f"{facts['images']} images ({facts['failed']} failed) · {facts['model']} at {facts['image_size']} px · "
        f"{facts['index_type']}"
        + (f" · recall@10 {recall:.3f}" if recall is not None else "")
        + f" · {facts['data_dir']}"
    )
    if facts["random_weights"]:
        st.error(f"This index was {RANDOM_WEIGHTS_WARNING}.", icon=":material/warning:")

pages = [
    st.Page("views/search.py", title="Search by image", icon=":material/image_search:", default=True),
    st.Page("views/region.py", title="Find a region", icon=":material/crop_free:"),
    st.Page("views/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
]
st.navigation(pages).run()
