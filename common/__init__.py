"""Helpers shared by every genshift package and owned by none: atomic file writes.

`common` imports no other genshift package, so `leaderboard` (which reads files only) can use it without
depending on the data, detector or engine code.
"""
