"""Loaders that turn cached public data sets into typed, timezone-aware frames."""
