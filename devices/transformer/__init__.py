"""Emulated distribution transformer: IEC 60076-7 thermal model behind an OPC UA server."""
