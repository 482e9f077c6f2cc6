"""What every training stage shares: the Trainer subclass with lmforge's guards (atomic
checkpoints, NaN/Inf guard, SIGTERM save, exact per-step metrics) and argument building."""
