"""Billing: tariffs, pricing of charging sessions and site energy bills.

Money is ``decimal.Decimal`` with an ISO 4217 currency, never float. Imports nothing of
ours but ``controllers``.
"""
