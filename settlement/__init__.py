"""fairshare settlement package."""
