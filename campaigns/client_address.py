"""Whose address a request behind a proxy comes from.

A proxy appends the address it received the request from to X-Forwarded-For; what was
there before came from the client, which can write anything. So the client is the last
entry, the one our proxy added: the login throttle (campaigns/login_throttle.py) and
the tracker (tracking/hotpath.py) both read it here, so a bot cannot pick the address
its clicks are judged by, nor a guesser the address its failures count against."""


def proxied_client(forwarded_for: str) -> str:
    """The last entry of an X-Forwarded-For header ("" when there is none)."""
    return forwarded_for.rsplit(",", 1)[-1].strip()
