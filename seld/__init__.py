"""The science of two-stage SELD as a plain library, one subpackage a job, each importing only
those below it (checked by import-linter):

* :mod:`seld.serving`: predicting with trained models, exported model files, plots;
* :mod:`seld.config`: the experiment config;
* :mod:`seld.methods`: models, losses, training, inference;
* :mod:`seld.features`, :mod:`seld.metrics`, :mod:`seld.synth`: features and training windows;
  the scorers; the synthesizer (none imports another);
* :mod:`seld.data`: datasets on disk, metadata, submissions, folds;
* :mod:`seld.errors`, :mod:`seld.fsutil`: user-facing errors, atomic writes.

Nothing in this package imports Ray or MLflow; ``orchestrator`` owns distribution and tracking.
"""

__version__ = "0.1.0"
