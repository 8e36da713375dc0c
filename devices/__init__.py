"""Emulated field devices, each a real protocol endpoint. Imports nothing of ours but devices."""
