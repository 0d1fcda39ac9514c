"""The domain every process shares, pure (no I/O, no protobuf): checked values, ids,
instruments, FX market sessions and the clock."""
