"""Writes what django-anymail parsed from each inbound message to a JSON file in
$INBOUND_OUTPUT_DIR, for the Rust test to read and compare with what was in the mailbox."""
import base64
import json
import os
import uuid

from anymail.signals import inbound
from django.dispatch import receiver


def _address(address):
    return {"name": address.display_name, "address": address.addr_spec}


@receiver(inbound)
def record_inbound(sender, event, esp_name, **kwargs):
    message = event.message
    record = {
        "esp": esp_name,
        "event_id": event.event_id,
        "message_id": message["Message-ID"],
        "subject": message.subject,
        "from": _address(message.from_email) if message.from_email else None,
        "to": [_address(a) for a in message.to],
        "cc": [_address(a) for a in message.cc],
        "envelope_recipient": message.envelope_recipient,
        "envelope_sender": message.envelope_sender,
        "text": message.text,
        "attachments": [
            {
                "name": part.get_filename(),
                "content_type": part.get_content_type(),
                "content_base64": base64.b64encode(part.get_content_bytes()).decode(),
            }
            for part in message.attachments
        ],
    }
    directory = os.environ["INBOUND_OUTPUT_DIR"]
    name = uuid.uuid4().hex
    # Written whole under a temporary name, then renamed: the test never reads half.
    with open(os.path.join(directory, name + ".tmp"), "w") as out:
        json.dump(record, out)
    os.rename(
        os.path.join(directory, name + ".tmp"), os.path.join(directory, name + ".json")
    )
