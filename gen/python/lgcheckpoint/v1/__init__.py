"""lgcheckpoint.v1: checkpoints, pending writes and the CheckpointService."""
