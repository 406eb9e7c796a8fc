"""The training core shared by the captioner and the CARL trainer: run folders, checkpoints,
logging, RNG state, stop-on-signal and the distributed helpers."""
