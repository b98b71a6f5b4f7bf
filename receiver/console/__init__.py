"""The web console: server-rendered pages for what Grafana cannot show (docs/console.md).

``patchwatch.receiver.console.routes`` is the blueprint with every page and action registered.
"""
