"""Runtime: the local cell (cell file, supervisor, nats launcher) and `serve`."""
