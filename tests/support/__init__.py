"""What the tests share: servers on loopback, reports and fleets, oracles, paths.

Test modules import helpers from here (and fixtures from ``tests/conftest.py``), never
from one another, so that each test module can be read, moved or deleted on its own.
One module per thing provided: ``servers`` (``patchwatch serve``, PostgreSQL, child
processes), ``network`` (ports, DNS, no egress), ``mirrors`` (a mirror with faults),
``repositories`` (rpm-md and apt trees and the refresh's helpers), ``monitoring``
(Prometheus and Alertmanager), ``web`` (HTTP calls and polling), ``reports`` and
``fleets`` (report documents and seeded stores), ``cli``, ``metrics``, ``oracles``
(real tools compared against), ``tools`` (skipping or failing when a tool is missing),
``archrepo`` and ``vulns`` (their fixtures' builders and readers), ``paths``.
"""
