"""fairshare risk package."""
