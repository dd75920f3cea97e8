from django.apps import AppConfig


class InboundSiteConfig(AppConfig):
    name = "inbound_site"

    def ready(self):
        from . import handlers  # noqa: F401  (connects the inbound signal)
