"""Market optimiser: the depot schedule as an LP, rolling horizon, day-ahead bids, settlement.

See ``controllers/market/README.md`` for the formulation, units, sign conventions and the
rule of which prices are known when. Imports nothing of ours but ``controllers``.
"""
