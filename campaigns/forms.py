from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password

from campaigns.models import Campaign, Role, Workspace


class WorkspaceCreateForm(forms.Form):
    name = forms.CharField(max_length=120, label="Workspace name")


class WorkspaceSettingsForm(forms.ModelForm):
    class Meta:
        model = Workspace
        fields = [
            "name",
            "unique_window_hours",
            "bot_min_seconds_after_delivery",
            "bot_burst_links",
            "bot_burst_seconds",
        ]
        labels = {
            "unique_window_hours": "Unique-click window (hours)",
            "bot_min_seconds_after_delivery": "Scanner delay (seconds after delivery)",
            "bot_burst_links": "Burst: distinct links",
            "bot_burst_seconds": "Burst: within seconds",
        }


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = ["name", "kind", "status", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class CampaignFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Name")
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *Campaign.Status.choices]
    )
    kind = forms.ChoiceField(required=False, choices=[("", "Any type"), *Campaign.Kind.choices])
    sort = forms.ChoiceField(
        required=False,
        choices=[
            ("newest", "Newest first"),
            ("oldest", "Oldest first"),
            ("name", "Name A–Z"),
            ("-name", "Name Z–A"),
            ("updated", "Recently changed"),
            ("status", "Status"),
        ],
    )


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class SignupForm(forms.Form):
    """Account creation for someone accepting an invitation."""

    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, min_length=8)

    def clean_username(self):
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("That username is taken.")
        return username

    def clean_password(self):
        password = self.cleaned_data["password"]
        validate_password(password)
        return password
