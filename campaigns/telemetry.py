"""Prometheus counters of sending (served at /metrics by clickmap/telemetry.py;
docs/operations.md lists them with their alerts)."""

from prometheus_client import Counter

DELIVERIES = Counter(
    "clickmap_deliveries",
    "Deliveries by what happened to them: queued (planned for a send), sent (the SMTP "
    "server took the message) or failed (personalisation or the server refused it).",
    ["outcome"],
)
QUEUED = DELIVERIES.labels("queued")
SENT = DELIVERIES.labels("sent")
FAILED = DELIVERIES.labels("failed")
