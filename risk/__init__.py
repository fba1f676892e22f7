"""fairshare risk: pure numpy/scipy models and valuations (no I/O, clock, environment or store).

Modules and their main functions
--------------------------------
- ``ou``: ``OUParams``, ``fit_ar1``, ``ou_from_ar1``, ``calibrate_ou``, ``ou_mean``,
  ``ou_variance``, ``simulate_ou`` (DOMAIN.md section 6 discrete-time formulas).
- ``options``: ``black76``, ``black_scholes_put``, ``gbm_paths`` (oracles).
- ``lsm``: ``lsm_value`` / ``lsm_apply`` (Longstaff-Schwartz, in and out of sample).
- ``stats``: ``Estimate``, ``mc_mean``, ``control_variate_mean``, ``cvar``, ``normal_cvar``,
  ``risk_premium``.
- ``calendar``: ``Grid``, ``grid_for_period``, market-time features, ``floor_cap_for_fy``.
- ``price_model``: ``calibrate_price_model`` (shape x slow factor + daily deviation + fast OU +
  spikes); ``spikes``: regime-switching / jump-OU spike layer; ``load_model``:
  ``calibrate_load_model`` (shared daily demand driver and spike uplift).
- ``simulate``: ``simulate_market`` (streaming, seeded per block of paths, antithetic, Sobol);
  ``bootstrap``: ``simulate_bootstrap`` (joint block resampling of history).
- ``validation``: ``validation_report`` (simulated vs historical statistics).
- ``hedging``: ``HedgeBook``, ``book_payoffs_aud``, ``min_variance_hedge``,
  ``cvar_optimal_hedge``; ``valuation``: ``value_hedge_book``.
- ``reentry``: ``value_reentry``, ``reentry_levers``; ``safe_harbour``:
  ``solve_safe_harbour_rate``; ``pricing``: ``price_safe_harbour`` (all of the above at once).
- ``settings``: ``RiskSettings`` (pydantic; model choices are validated Literals);
  ``serialize``: model parameters to and from JSON-ready dicts.
"""
