from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self):
        from tracking import segment_conditions

        # Segments' "clicked" and "opened" conditions read this app's event tables.
        segment_conditions.register()
