"""Loupe's Streamlit UI (``streamlit run ui/app.py``)."""
