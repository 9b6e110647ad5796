"""The two-stage and joint methods: models, losses, training one stage with exact resume, and
inference from model outputs to per-frame predictions."""
