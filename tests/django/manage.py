#!/usr/bin/env python3
"""A minimal Django project with django-anymail's inbound webhooks, started by
tests/receivers.rs to receive pophook's `postmark` and `mailgun` formats."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inbound_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
