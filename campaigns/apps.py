from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self):
        from campaigns import login_throttle  # noqa: F401  (connects its signal receiver)
