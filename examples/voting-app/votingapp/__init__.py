"""The DANS voting app: vote -> worker -> db, result <- db; one source, every version."""
