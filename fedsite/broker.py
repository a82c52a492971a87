"""The embedded Celery broker: kombu's filesystem transport, made safe for concurrent use.

kombu's own `_put` creates the message file under its final name and then
writes it, so a worker polling the folder can move and read a file that is
still empty and die on a JSONDecodeError. Here a message is written under a
name no reader picks up (`….msg.part`) and renamed into place, which is atomic
on one filesystem. `filesystem://` broker URLs use this transport.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu's stub omits the **kwargs filesystem.Channel._put takes
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    """Make `filesystem://` URLs use this transport (idempotent)."""
    TRANSPORT_ALIASES["filesystem"] = "fedsite.broker:Transport"
