"""Settings for the test receiver. Everything that differs per test run comes from the
environment the Rust test sets: the basic-auth pair, the Mailgun signing key and the
directory the inbound handler writes to."""
import os

SECRET_KEY = "pophook-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "inbound_site.urls"
INSTALLED_APPS = ["anymail", "inbound_site.apps.InboundSiteConfig"]
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True

ANYMAIL = {
    # django-anymail checks HTTP basic auth on every webhook: "user:password".
    "WEBHOOK_SECRET": os.environ["INBOUND_BASIC_AUTH"],
    "MAILGUN_WEBHOOK_SIGNING_KEY": os.environ["INBOUND_MAILGUN_KEY"],
}

# Errors (a refused signature, a body too large) are logged to the server's output,
# which the test keeps in a file and shows when an assertion fails.
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
