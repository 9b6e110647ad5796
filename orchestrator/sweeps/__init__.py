"""Sweeps shipped with the project (``seld-orch sweep NAME``) and the published numbers that
``seld-orch compare`` sets beside a sweep's results (``published.yaml``)."""
