"""One thin module per DVC stage: read params.yaml, call the simgan library, write outputs
atomically. dvc.yaml is the only definition of how they connect."""
