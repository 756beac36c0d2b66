"""Streamlit web app: upload a patient's MRI and see the tumour segmentation.

``app/streamlit_app.py`` is the page; ``app/logic.py`` holds everything the
page does that can be tested without a browser (uploads, validation,
temporary folders, the example case, tables and slice pictures).
"""
