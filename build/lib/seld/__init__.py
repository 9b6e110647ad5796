"""The science of two-stage SELD as a plain library: data, features, models, metrics.

Nothing in this package imports Ray or MLflow; ``orchestrator`` owns distribution and tracking.
"""

__version__ = "0.1.0"
