"""Forms of a campaign's send panel: sender, test send, audience and time."""

from django import forms
from django.utils import timezone

from campaigns.models import EmailNode, Segment
from campaigns.personalise import PersonaliseError, check_template
from campaigns.scheduling import ScheduleError, local_to_utc


class SenderForm(forms.ModelForm):
    """An email's From name and address, Reply-To and preheader."""

    class Meta:
        model = EmailNode
        fields = ["from_name", "from_email", "reply_to", "preheader"]
        labels = {
            "from_name": "Sender name",
            "from_email": "Sender address",
            "reply_to": "Reply-To",
            "preheader": "Preheader",
        }
        help_texts = {
            "from_email": "Empty: the server's default sender.",
            "preheader": "The inbox preview text after the subject. Jinja allowed.",
        }

    def clean_from_name(self):
        name = self.cleaned_data["from_name"]
        if any(ch in name for ch in '\r\n<>"') or any(ord(ch) < 32 for ch in name):
            raise forms.ValidationError("A sender name has no line breaks, quotes or < >.")
        return name.strip()

    def clean_from_email(self):
        address = self.cleaned_data["from_email"].strip()
        if address:
            forms.EmailField().clean(address)
        return address

    def clean_preheader(self):
        preheader = self.cleaned_data["preheader"]
        try:
            check_template(preheader, html_mode=False)
        except PersonaliseError as error:
            raise forms.ValidationError(
                f"The preheader’s personalisation is invalid: {error}"
            ) from error
        return preheader


class TestSendForm(forms.Form):
    addresses = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Send a test to",
        help_text="Up to 20 addresses, separated by commas or lines. Test messages are "
        "marked [Test], their links are not tracked, and no number counts them.",
    )
    customer = forms.CharField(
        required=False,
        label="Personalise as",
        help_text="A customer's email or id; empty: the first customer of the audience.",
    )


class SendForm(forms.Form):
    """Audience and time of the send; `at` (UTC) is set when it is scheduled."""

    segment = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="Everyone subscribed", label="Audience"
    )
    when = forms.ChoiceField(
        choices=[("now", "Send now"), ("later", "Schedule")], initial="now", label="When"
    )
    date = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Only to schedule.",
    )
    time = forms.TimeField(required=False, widget=forms.TimeInput(attrs={"type": "time"}))

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.fields["segment"].queryset = Segment.objects.order_by("name")
        self.fields["date"].label = f"Date ({workspace.time_zone})"
        self.fields["time"].label = f"Time ({workspace.time_zone})"

    def clean(self):
        data = super().clean()
        data["at"] = None
        if data.get("when") == "later":
            if not data.get("date") or not data.get("time"):
                raise forms.ValidationError("Give the date and time to send at.")
            try:
                data["at"] = local_to_utc(data["date"], data["time"], self.workspace.time_zone)
            except ScheduleError as error:
                raise forms.ValidationError(str(error)) from error
            if data["at"] <= timezone.now():
                raise forms.ValidationError("Choose a time in the future.")
        return data
