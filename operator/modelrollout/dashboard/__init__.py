"""``kubectl modelrollout dashboard``: a local web page over the user's own kubeconfig (docs/dashboard.md).

``view`` turns ModelRollouts, their Events and what the dashboard recorded into what the page shows (pure);
``server`` is the aiohttp server on 127.0.0.1 (a watch, server-sent events, Prometheus range queries, the
plugin's actions); ``static/`` is the page itself (vanilla JS, inline SVG charts, no library).
"""
