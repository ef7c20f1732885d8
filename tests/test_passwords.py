"""Password change (logged in) and password reset by email, through the real forms and a
real SMTP server; a reset also lifts a login lock."""

import re

from django.test import Client

from tests.conftest import PASSWORD

RESET_LINK = re.compile(r"http://testserver(/password-reset/[^/\s]+/[^/\s]+/)")
NEW = "a-Fresh-passphrase-42"


def can_log_in(username, password) -> bool:
    response = Client().post("/login/", {"username": username, "password": password})
    return response.status_code == 302


def test_password_change_through_the_form(make_user, client_for):
    user = make_user("marta")
    client = client_for(user)
    assert 'href="/account/password/"' in client.get("/").content.decode()  # in the header
    form = client.get("/account/password/")
    assert form.status_code == 200 and b"Change your password" in form.content
    wrong = client.post(
        "/account/password/",
        {"old_password": "not-it", "new_password1": NEW, "new_password2": NEW},
    )
    assert wrong.status_code == 200 and b"incorrect" in wrong.content
    done = client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW},
        follow=True,
    )
    assert done.redirect_chain == [("/account/password/done/", 302)]
    assert b"Password changed" in done.content
    assert "_auth_user_id" in client.session  # this session stays logged in
    assert not can_log_in("marta", PASSWORD)
    assert can_log_in("marta", NEW)


def request_reset(address):
    return Client().post("/password-reset/", {"email": address}, follow=True)


def test_password_reset_by_email(make_user, smtp_server):
    make_user("marta", email="marta@example.test")
    sent = request_reset("Marta@Example.test")
    assert sent.redirect_chain == [("/password-reset/sent/", 302)]
    assert b"Check your email" in sent.content
    [message] = smtp_server.messages()
    assert message["To"] == "marta@example.test"
    assert message["Subject"] == "Reset your Clickmap password"
    link = RESET_LINK.search(message.get_body(("plain",)).get_content()).group(1)
    visitor = Client()
    form = visitor.get(link, follow=True)
    assert b"Choose a new password" in form.content
    set_url = form.redirect_chain[-1][0]
    done = visitor.post(set_url, {"new_password1": NEW, "new_password2": NEW}, follow=True)
    assert done.redirect_chain == [("/password-reset/done/", 302)]
    assert b"Password set" in done.content
    assert not can_log_in("marta", PASSWORD)
    assert can_log_in("marta", NEW)
    again = Client().get(link, follow=True)
    assert b"This link does not work any more" in again.content


def test_reset_for_an_unknown_address_answers_the_same_and_mails_nothing(make_user, smtp_server):
    make_user("marta", email="marta@example.test")
    unknown = request_reset("nobody@example.test")
    known = request_reset("marta@example.test")
    assert unknown.redirect_chain == known.redirect_chain
    strip = re.compile(r'(name="csrfmiddlewaretoken" value|"X-CSRFToken": )"[^"]+"')
    assert strip.sub("", unknown.content.decode()) == strip.sub("", known.content.decode())
    assert [m["To"] for m in smtp_server.messages()] == ["marta@example.test"]


def test_a_password_reset_lifts_a_login_lock(make_user, smtp_server):
    make_user("marta", email="marta@example.test")
    attacker = Client()
    for attempt in range(10):
        attacker.post("/login/", {"username": "marta", "password": f"wrong-{attempt}"})
    assert not can_log_in("marta", PASSWORD)  # locked
    request_reset("marta@example.test")
    link = RESET_LINK.search(smtp_server.messages()[0].get_body(("plain",)).get_content())
    visitor = Client()
    set_url = visitor.get(link.group(1), follow=True).redirect_chain[-1][0]
    visitor.post(set_url, {"new_password1": NEW, "new_password2": NEW})
    assert can_log_in("marta", NEW)
