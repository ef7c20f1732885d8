# Clickmap image: web (gunicorn), worker and beat (celery) all run from it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STATIC_ROOT=/app/var/staticfiles

# Debian's Chromium renders the click-map previews (Playwright drives it; no browser download).
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY clickmap ./clickmap
COPY campaigns ./campaigns
COPY tracking ./tracking
RUN pip install .
COPY . .

# The volumes mounted under /app/var start as these folders: the app's user owns them.
RUN useradd --create-home --uid 1000 clickmap \
    && mkdir -p /app/var/spool /app/var/metrics && chown -R clickmap /app/var
USER clickmap

# collectstatic needs settings but no database (it never connects) or secret worth keeping.
# The server refuses to start without it (clickmap/static_files.py).
RUN SECRET_KEY=build-only DATABASE_URL=postgres://build@localhost/unused python manage.py collectstatic --noinput

EXPOSE 8000
CMD ["gunicorn", "clickmap.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--logger-class", "clickmap.gunicorn_logging.Logger", "--control-socket", "/tmp/gunicorn-web.ctl"]
