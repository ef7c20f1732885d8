from django.dispatch import Signal

# Sent after ingestion stored events (kwargs: report). The click map listens, so tracking
# never imports it.
events_stored = Signal()
