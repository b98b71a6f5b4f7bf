"""Named reads and writes for operators: the fleet's inventory, its upkeep, its problems.

The CLI (``patchwatch hosts|repos|os|packages|attention|dbcheck``) and the admin API
call these; each returns plain dicts or records so that both render the same data.
One module per concern, imported from where it lives:

- :mod:`~patchwatch.inventory.hosts`: find, show, compare, delete hosts; their flags.
- :mod:`~patchwatch.inventory.repositories`: list, show, enable, mark and link repositories.
- :mod:`~patchwatch.inventory.os_groups`: OS releases and their groups of repositories.
- :mod:`~patchwatch.inventory.packages`: packages by name; installed ones no repository offers.
- :mod:`~patchwatch.inventory.attention`: what needs an operator, one row per problem.
- :mod:`~patchwatch.inventory.dbcheck`: what nothing refers to any more; integrity checks.
- :mod:`~patchwatch.inventory.common`: what they share (name matching, id batches).

Lookups that an operator types (a host, a repository, an OS release) resolve to exactly
one object or fail with a message that says why (unknown, or which candidates an
ambiguous name matches); the API asks for exact names and ids.

Writes are short transactions. Changes to a repository (enabled, security, linking) or
to an OS group are *inputs* of the update computation, whose digest notices them: they
take effect at the next updates run, not here. A host's own flags are recomputed for
that one host at once, because an operator who flips them wants to see the result.

Not done here: refreshing mirrors (``patchwatch.pipeline.refresh``), processing reports
(``patchwatch.pipeline.processing``), deleting tokens or host credentials with a host (revoke
the token: ``patchwatch token revoke``).
"""
