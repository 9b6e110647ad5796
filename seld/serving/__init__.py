"""Trained methods in use: predicting recordings with a fold ensemble, exported model files and
prediction-versus-reference plots."""
