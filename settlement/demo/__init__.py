"""The deterministic synthetic demo retailer (``fairshare demo``).

``synth`` (calendar, weather, solar shape, prices), ``households`` (attributes and energy flows),
``customers`` (accounts and enrolments), ``files`` (NEM12, AEMO price and customer files), ``run``
(generate + ingest + summary: :func:`settlement.demo.run.build_demo`). Inputs: ``data/demo.toml``.
"""
