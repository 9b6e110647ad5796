"""From audio to training batches: spectral features, extraction into the HDF5 feature store,
per-fold scalers, training windows (lazy HDF5 or memory-mapped caches) and the array's channel
symmetries as augmentation."""
