"""Entry point for gunicorn: ``gunicorn wsgi:app`` (see webapp/gunicorn_conf.py)."""

from webapp import create_app

app = create_app()
