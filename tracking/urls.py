from django.urls import path

from tracking import views

urlpatterns = [
    path("c/<path:token>", views.click, name="click"),
    path("o/<path:token>", views.open_pixel, name="open"),
    path("u/<path:token>", views.unsubscribe_view, name="unsubscribe"),
]
