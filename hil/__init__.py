"""Hardware in the loop: the bench runtime on the wall clock (``migrid bench``).

Real chargers connect to the same CSMS as in the twin over OCPP-J, real meters and
inverters are read over Modbus TCP (SunSpec), real OPC UA servers over OPC UA; the rest of
the site is emulated in-process (or as separate station processes). See ``hil/README.md``.

Modules: :mod:`hil.bench_file` (the bench file model), :mod:`hil.runtime` (the wall-clock
runtime), :mod:`hil.site` (site devices, emulated and physical), :mod:`hil.station`
(standalone station emulator process), :mod:`hil.cli` (``migrid bench``).
"""
