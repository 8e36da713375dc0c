"""Tariffs in Decimal: OCPI 2.2.1 charging tariffs and utility (URDB-style) tariffs.

See ``controllers/billing/tariffs/README.md`` for the rules implemented, the rounding
points and the sources.

- :mod:`controllers.billing.tariffs.money`: minor units, rounding, cent allocation.
- :mod:`controllers.billing.tariffs.ocpi`: OCPI 2.2.1 Tariff models and pricing engine.
- :mod:`controllers.billing.tariffs.utility`: TOU energy, demand charges, dynamic prices.
"""
