import zoneinfo

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password

from campaigns.inventory import TemplateInputError, decode_template
from campaigns.models import Campaign, Role, Template, Variant, Workspace
from campaigns.personalise import PersonaliseError, check_template
from campaigns.templatezip import TemplateZipError, is_zip, read_template_zip


class WorkspaceCreateForm(forms.Form):
    name = forms.CharField(max_length=120, label="Workspace name")


class WorkspaceSettingsForm(forms.ModelForm):
    class Meta:
        model = Workspace
        fields = [
            "name",
            "time_zone",
            "unique_window_hours",
            "bot_min_seconds_after_delivery",
            "bot_burst_links",
            "bot_burst_seconds",
        ]
        labels = {
            "time_zone": "Time zone",
            "unique_window_hours": "Unique-click window (hours)",
            "bot_min_seconds_after_delivery": "Scanner delay (seconds after delivery)",
            "bot_burst_links": "Burst: distinct links",
            "bot_burst_seconds": "Burst: within seconds",
        }
        widgets = {
            "time_zone": forms.Select(
                choices=[(z, z) for z in sorted(zoneinfo.available_timezones())]
            )
        }


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        # No status: it follows what happened (campaigns/scheduling.py), never set by hand.
        fields = ["name", "kind", "description"]
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
    """Account creation for someone accepting an invitation: the account gets the invited
    address, which must not belong to an account already (one account per address)."""

    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, min_length=8)

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean_username(self):
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("That username is taken.")
        return username

    def clean_password(self):
        password = self.cleaned_data["password"]
        user = get_user_model()(username=self.data.get("username", ""), email=self.email)
        validate_password(password, user)
        return password

    def clean(self):
        data = super().clean()
        # Only the invitation's holder (mailed at this address) learns this, never the
        # owner who invited it.
        if get_user_model().objects.filter(email__iexact=self.email).exists():
            raise forms.ValidationError(
                f"An account for {self.email} exists already: log in with it to accept."
            )
        return data


class TemplateContentForm(forms.Form):
    """Template HTML pasted into the editor or uploaded as a file (any common encoding),
    or a .zip of the HTML and its images (campaigns/templatezip.py): cleaned_data's
    ``assets`` then holds the zip's files, else it is None."""

    html = forms.CharField(
        required=False,
        label="HTML",
        widget=forms.Textarea(attrs={"rows": 22, "spellcheck": "false", "class": "code"}),
        strip=False,
    )
    html_file = forms.FileField(
        required=False,
        label="…or upload an .html file, or a .zip of the HTML and its images",
        help_text="In a .zip, the HTML's relative image paths (images/hero.png) name its "
        "files; an AMP part is named *.amp.html.",
    )
    amp_html = forms.CharField(
        required=False,
        label="AMP part (optional)",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "code"}),
        strip=False,
    )
    note = forms.CharField(required=False, max_length=200, label="What changed")

    def _decoded(self, raw: bytes, what: str) -> str:
        try:
            return decode_template(raw)
        except TemplateInputError as error:
            raise forms.ValidationError(f"{what}: {error}") from error

    def clean(self):
        data = super().clean()
        upload = data.get("html_file")
        data["assets"] = None
        if upload and is_zip(upload.read(4)):
            try:
                bundle = read_template_zip(upload)
            except TemplateZipError as error:
                raise forms.ValidationError(f"{upload.name}: {error}") from error
            data["html"], data["assets"] = bundle.html, bundle.assets
            if bundle.amp_html:
                data["amp_html"] = bundle.amp_html
        elif upload:
            upload.seek(0)
            data["html"] = self._decoded(upload.read(), upload.name)
        elif data.get("html", "").strip():
            data["html"] = self._decoded(data["html"].encode("utf-8"), "HTML")
        else:
            raise forms.ValidationError("Paste the template's HTML or upload an .html file.")
        if data.get("amp_html", "").strip():
            data["amp_html"] = self._decoded(data["amp_html"].encode("utf-8"), "AMP part")
        else:
            data["amp_html"] = ""
        return data


class TemplateCreateForm(TemplateContentForm):
    name = forms.CharField(max_length=200)
    field_order = ["name", "html", "html_file", "amp_html"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.fields["note"]


class VariantForm(forms.Form):
    """Add an email (node) variant to a campaign: which template, subject, weight."""

    node_name = forms.CharField(max_length=200, initial="Email", label="Email")
    position = forms.IntegerField(min_value=1, initial=1, required=False, label="Step")
    name = forms.CharField(max_length=60, initial="A", label="Variant")
    subject = forms.CharField(max_length=400, help_text="Jinja allowed: {{ customer.first_name }}")
    template = forms.ModelChoiceField(queryset=None, empty_label=None)
    weight = forms.IntegerField(min_value=1, max_value=1000, initial=1)
    format = forms.ChoiceField(choices=Variant.Format.choices, initial=Variant.Format.HTML)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].queryset = Template.objects.order_by("name")

    def clean_subject(self):
        """Refused when it is not valid Jinja: every send of it would fail."""
        subject = self.cleaned_data["subject"]
        try:
            check_template(subject, html_mode=False)
        except PersonaliseError as error:
            raise forms.ValidationError(
                f"The subject’s personalisation is invalid: {error}"
            ) from error
        return subject
