"""gunicorn's own lines in the one-line format of every other process
(clickmap/log_format.py): `gunicorn --logger-class clickmap.gunicorn_logging.Logger`.

gunicorn writes its master's and workers' lines ("Booting worker", a worker timeout, a
crash) and its access log with handlers and formats of its own, which Django's LOGGING
never reaches: without this, a web or tracker container's output mixes Apache-style
access lines and bracketed error lines with the app's `time LEVEL logger: message k=v`,
and a log shipper needs three parsers. Here gunicorn's handlers get the app's formatter
(LOG_FORMAT text or json, as settings read it), and each request is one record named
"request" with its numbers as fields: method, path (no query string: it can hold
personal data), status, bytes, ms, remote address.
"""

import os

from gunicorn import glogging

from clickmap.log_format import LineFormatter


class Logger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        formatter = LineFormatter(os.environ.get("LOG_FORMAT", "text"))
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):  # gunicorn's own, not a dictConfig's
                    handler.setFormatter(formatter)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):  # "200 OK"
            status = status.split(None, 1)[0]
        fields = {
            "method": environ.get("REQUEST_METHOD", "-"),
            "path": environ.get("PATH_INFO", "-"),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None) or 0,
            "ms": round(request_time.total_seconds() * 1000, 1),
            "remote": environ.get("REMOTE_ADDR", "-"),
        }
        self.access_log.info("request", extra={"fields": fields})
