"""The Beam-free core: one patient's NIfTI files in, one schema record out.

``patient.preprocess`` runs load -> validate -> mask -> crop -> N4 ->
normalize -> encode on one patient; ``discovery`` finds a cohort's patients
and fingerprints their files; ``n4`` wraps antspyx; ``checksums`` says what a
version id records about each input.  Nothing here imports Apache Beam
(object-store paths load it lazily through ``shared.storage``) or changes the
environment at import: the data engine (``beam_pipeline``) fans this out,
and prediction, evaluation and the web app call it directly.
"""
