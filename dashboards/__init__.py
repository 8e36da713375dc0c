"""Dash dashboard and read API over run folders (imports twin's reader only)."""
