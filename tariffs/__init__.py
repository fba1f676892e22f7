"""fairshare tariffs package."""
