"""The verification suite that ships with ntkcheck.

* :mod:`ntkcheck.testing.claims` — the claims of the seed papers and the assertion helpers
  (:func:`~ntkcheck.testing.claims.check_close`, :func:`~ntkcheck.testing.claims.check_at_most`)
  that record what each check measured.
* :mod:`ntkcheck.testing.plugin` — the pytest plugin (entry point ``pytest11``): Hypothesis
  profiles, ``--ntkcheck-device``/``--ntkcheck-dtype`` with ``device``/``dtype`` fixtures,
  the claim recorder and ``--ntkcheck-mutant``.
* :mod:`ntkcheck.testing.mutants` — the catalogue of plausible bugs the properties must catch.
* ``ntkcheck.testing.properties`` — the Hypothesis properties, one module per claim;
  ``ntkcheck verify`` runs them.

The strategies that draw architectures, data and losses are public in :mod:`ntkcheck.testing.strategies`;
the tolerance table in :mod:`ntkcheck.testing.tolerances`.
"""
