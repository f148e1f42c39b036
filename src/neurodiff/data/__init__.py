"""Data in: NIfTI and table I/O, preprocessing of real scans, embedded synthetic cohorts."""
