"""The pieces of bench/feed.py: processes, the cell, wrk, users, push, the ceiling."""
