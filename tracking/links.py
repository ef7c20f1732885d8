"""Tracking URLs for sent emails (the LINK_TRACKER that campaigns.sending uses)."""

from django.conf import settings

from tracking.tokens import ClickToken, OpenToken, UnsubscribeToken, safe_destination, sign_token

# The honeypot's destination: a scanner that follows it lands on our neutral page.
HONEYPOT_LINK_ID = 0


class SignedTracker:
    """Signed `/c/`, `/o/` and `/u/` URLs under TRACKING_BASE_URL."""

    def __init__(self, base_url: str | None = None):
        self.base = (base_url or settings.TRACKING_BASE_URL).rstrip("/")

    def click_url(self, delivery_id: int, link_id: int, url: str) -> str | None:
        """The tracking URL for a link, or None when the destination is not a web URL
        (it is then left as written: nothing to redirect to safely)."""
        destination = safe_destination(url)
        if destination is None:
            return None
        return f"{self.base}/c/{sign_token(ClickToken(delivery_id, link_id, destination))}"

    def honeypot_url(self, delivery_id: int) -> str:
        token = ClickToken(delivery_id, HONEYPOT_LINK_ID, f"{self.base}/", honeypot=True)
        return f"{self.base}/c/{sign_token(token)}"

    def open_url(self, delivery_id: int) -> str:
        return f"{self.base}/o/{sign_token(OpenToken(delivery_id))}"

    def unsubscribe_url(self, delivery_id: int) -> str:
        return f"{self.base}/u/{sign_token(UnsubscribeToken(delivery_id))}"
