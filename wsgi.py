"""WSGI entry point: `gunicorn wsgi:app`."""

from cds_service.web import create_app

app = create_app()
