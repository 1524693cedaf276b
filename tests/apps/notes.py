"""The message the broadcast tests send: a numbered note (registered by name, so the admin in
the test process and the listener processes agree on it)."""

from ceylon_net import message


@message
class Note:
    n: int
    text: str = ""
