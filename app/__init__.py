"""Streamlit web app: upload a patient's MRI and see the tumour segmentation.

``app/streamlit_app.py`` is the page; what it does is split so that each part
can be tested without a browser: ``app/uploads.py`` (checking the uploaded
files: sizes, zips, NIfTI headers, names, writing them into a temporary
folder), ``app/session.py`` (the command line, the cached model, the example
case, one segmentation at a time) and ``app/views.py`` (slice pictures,
tables, legend and sidebar text).
"""
