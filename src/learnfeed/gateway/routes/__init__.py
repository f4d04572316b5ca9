"""The gateway's routes, one module per part of the API; each a small class built in
the composition root with what it calls, so a test can call a handler directly."""
