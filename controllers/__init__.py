"""Production control software: CSMS (OCPP server) and dynamic load management.

Imports nothing of ours but ``controllers``.
"""
