from django.apps import AppConfig


class ClickmapConfig(AppConfig):
    name = "clickmap"
    verbose_name = "Click map"
