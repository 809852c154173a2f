"""realmodel package."""
