"""Datasets as they are on disk: the DCASE 2019 facts, dataset folders, metadata and submission
CSVs, audio files, cross-validation folds, and the fingerprints that tie a cache to its inputs."""
