"""WSGI entry point: `gunicorn wsgi:app`.

The app is built without a database connection (a worker may start while the database is down): the schema is
brought to the newest revision by gunicorn's master (gunicorn.conf.py), or by `cds-trials db upgrade` before
another WSGI server starts.
"""

from cds_service.web import create_worker_app

app = create_worker_app()
