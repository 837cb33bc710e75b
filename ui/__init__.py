"""Loupe's Streamlit UI (``loupe ui``, or ``streamlit run ui/app.py`` from the project folder)."""
