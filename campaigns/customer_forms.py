"""Forms of the customer pages."""

import json

from django import forms
from django.utils import timezone

from campaigns.customer_import import ATTRIBUTE_NAME_RE, Column
from campaigns.models import Customer, CustomerImport

FIELD_CHOICES = [
    ("attribute", "Attribute"),
    ("email", "Email address"),
    ("external_id", "External id"),
    ("ignore", "Ignore"),
]
TYPE_CHOICES = [("text", "Text"), ("number", "Number"), ("date", "Date"), ("boolean", "Yes/no")]


class CustomerSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")


class CustomerForm(forms.ModelForm):
    subscribed = forms.BooleanField(required=False, label="Subscribed")
    attributes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false"}),
        required=False,
        help_text='A JSON object, e.g. {"first_name": "Ann", "country": "DE"}.',
    )

    class Meta:
        model = Customer
        fields = ["external_id", "email"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["external_id"].help_text = "Your own id for this customer (unique)."
        self.fields["subscribed"].initial = self.instance.unsubscribed_at is None
        self.initial["attributes"] = json.dumps(
            self.instance.attributes or {}, indent=2, ensure_ascii=False, sort_keys=True
        )

    def clean_email(self):
        return self.cleaned_data["email"].strip().lower()

    def clean_external_id(self):
        value = self.cleaned_data["external_id"].strip()
        taken = Customer.objects.filter(external_id=value).exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError("Another customer has this external id.")
        return value

    def clean_attributes(self):
        text = self.cleaned_data["attributes"].strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise forms.ValidationError(f"Not valid JSON: {e.msg} (line {e.lineno}).") from e
        if not isinstance(value, dict):
            raise forms.ValidationError("The attributes must be a JSON object: {…}.")
        bad = [k for k in value if not ATTRIBUTE_NAME_RE.match(k)]
        if bad:
            raise forms.ValidationError(
                f"Attribute names are letters, digits and underscores: “{bad[0]}” is not."
            )
        return value

    def save(self, commit=True):
        customer = super().save(commit=False)
        customer.attributes = self.cleaned_data["attributes"]
        if self.cleaned_data["subscribed"]:
            customer.unsubscribed_at = None
        elif customer.unsubscribed_at is None:
            customer.unsubscribed_at = timezone.now()
        if commit:
            customer.save()
        return customer


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV or XLSX file",
        help_text="UTF-8 (with or without BOM), comma or semicolon separated; the first row "
        "names the columns.",
    )


def mapping_from_post(data, width: int) -> tuple[str, list[Column], list[str]]:
    """(key, columns, problems) from the mapping form's fields: key, and per column i
    field_i, name_i and type_i."""
    problems = []
    key = data.get("key", "email")
    if key not in CustomerImport.Key.values:
        problems.append("Choose the key: email address or external id.")
    columns = []
    for i in range(width):
        field = data.get(f"field_{i}", "ignore")
        if field not in dict(FIELD_CHOICES):
            field = "ignore"
        type_ = data.get(f"type_{i}", "text")
        if type_ not in dict(TYPE_CHOICES):
            type_ = "text"
        columns.append(Column(field, data.get(f"name_{i}", "").strip(), type_))
    return key, columns, problems
