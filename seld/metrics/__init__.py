"""The DCASE 2019 Task 3 metrics (ER, F, DOA error, frame recall, SELD score), one module a job.

* :mod:`seld.metrics.scores`: the results both scorers give: :class:`SeldCounts` (summed over
  files before any ratio is taken), :class:`SeldScores`, :class:`ScoreReport` (overall, per
  file, per split / ov / ir) and :func:`report_from_counts`.
* :mod:`seld.metrics.grid`: the official 10-degree direction grid, the great-circle angles
  between its cells and the minimum-angle matching of directions in a frame.
* :mod:`seld.metrics.reference`: the per-file scorer, equal to the official one
  (:func:`count_file`, :func:`score_files`, :func:`score_directories`).
* :mod:`seld.metrics.batched`: the same numbers for many recordings and many predictions at once,
  for the threshold search (:func:`prepare_references`, :func:`count_masks`,
  :func:`pooled_counts`).
* :mod:`seld.metrics.baselines`: trivial reference systems that bound what a model must beat.

Submission CSVs (reading, writing, rows from events or predictions) are :mod:`seld.data.submission`.
This package imports nothing: import from the module that does the job.
"""
