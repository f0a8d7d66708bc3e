"""The files of a run dir: where each lives, the run's record, its lock, its checkpoints."""
