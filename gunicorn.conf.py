"""Gunicorn settings of the CDS service: `gunicorn -c gunicorn.conf.py wsgi:app` (also `cds-trials serve`).

Sync workers, one per core: a hook call is CPU-bound (parsing and validating FHIR), so more workers than cores
only queue. It listens on CDS_HOST:CDS_PORT (and CDS_METRICS_PORT when set); command-line options (`--bind`,
`--workers`, ...) override these values. What gunicorn does around the app (the database schema in the master,
JSON log lines, metrics of every worker, warm-up, garbage collection) is in cds_service/web/serving.py.
"""

import os
import tempfile

# Every worker writes its metrics to files in this folder, a new one for each start (removed by `on_exit`).
# prometheus_client picks its multiprocess mode when it is first imported: set before the imports below.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cds-metrics-")

from cds_service.config import load_settings  # noqa: E402
from cds_service.web.serving import (  # noqa: E402, F401 (gunicorn server hooks)
    JsonLogger,
    child_exit,
    listen_addresses,
    on_exit,
    on_reload,
    on_starting,
    post_request,
    post_worker_init,
)

bind = listen_addresses(load_settings())
workers = os.cpu_count() or 1
worker_class = "sync"
timeout = 60  # also bounds a worker's start: loading and checking the catalog, then the warm-up
control_socket_disable = True  # gunicorn >= 25: one fixed socket path per user; older versions ignore it
logger_class = JsonLogger
accesslog = "-"
