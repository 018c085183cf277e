"""Gunicorn settings of the CDS service: `gunicorn -c gunicorn.conf.py wsgi:app` (also `cds-trials serve`).

Sync workers, one per core: a hook call is CPU-bound (parsing and validating FHIR), so more workers than cores
only queue. Command-line options (`--bind`, `--workers`, ...) override these values. What a worker does
around the app (warm-up, garbage collection) is in cds_service/web/serving.py.
"""

import os

from cds_service.web.serving import post_request, post_worker_init  # noqa: F401 (gunicorn server hooks)

bind = "127.0.0.1:8080"
workers = os.cpu_count() or 1
worker_class = "sync"
timeout = 60  # also bounds a worker's start: loading and checking the catalog, then the warm-up
control_socket_disable = True  # gunicorn >= 25: one fixed socket path per user; older versions ignore it
