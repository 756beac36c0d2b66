"""BraTS scores: whole-region, lesion-wise (2023-2025) and matched-lesion (2026) metrics, the scoring of
prediction folders and models, the comparison of reports, the inference-window choice and cross-validation scoring."""
