"""`edge-seg run --serve`: the browser view, ``/stats.json`` and Prometheus ``/metrics``
(``server``) over a small threaded HTTP server (``http``)."""
