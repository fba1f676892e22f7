"""fairshare cli package."""
