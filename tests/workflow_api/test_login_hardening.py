"""Login hardening (issue 13: 30 wrong passwords in 23 s were all answered, "password" was accepted, every API
request paid the password hash).

Rules: after 5 wrong passwords (RADPATH_LOGIN_FAILURE_LIMIT) for one username, or from one client address, its
logins are refused with 429 for the cool-off, even with the right password, on the login page, the admin and the
API's HTTP Basic; a success before that resets the count. Clinic passwords pass Django's whole validator set with
12 characters at least. API clients exchange their password once for a token; the API throttles each user.
"""

import base64

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _page_login(client, username, password, ip):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def _basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_five_wrong_passwords_lock_the_username_on_the_login_page(client, users):
    # from five different addresses: it is the username that is counted; the fifth failure locks
    codes = [_page_login(client, "therapist", "wrong-password-123", f"10.0.0.{k + 1}").status_code for k in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    assert "did not match" in _page_login(client, "nobody", "wrong-password-123", "10.0.0.50").content.decode()
    response = _page_login(client, "therapist", PASSWORD, "10.0.0.99")
    assert response.status_code == 429
    assert "Too many failed logins (5)" in response.content.decode() and "0:15:00" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # another user is not affected
    assert _page_login(client, "scheduler", PASSWORD, "10.0.0.99").status_code == 302


def test_five_wrong_passwords_from_one_address_lock_that_address(client, users):
    names = ["therapist", "scheduler", "oncologist", "physicist", "dosimetrist"]
    codes = [_page_login(client, name, "wrong-password-123", "192.0.2.7").status_code for name in names]
    assert codes == [200, 200, 200, 200, 429]
    assert _page_login(client, "researcher", PASSWORD, "192.0.2.7").status_code == 429
    assert _page_login(client, "researcher", PASSWORD, "192.0.2.8").status_code == 302


def test_a_success_before_the_limit_resets_the_count(client, users):
    for _ in range(4):
        _page_login(client, "therapist", "wrong-password-123", "10.1.0.1")
    assert _page_login(client, "therapist", PASSWORD, "10.1.0.1").status_code == 302
    client.logout()
    for _ in range(4):
        _page_login(client, "therapist", "wrong-password-123", "10.1.0.1")
    assert _page_login(client, "therapist", PASSWORD, "10.1.0.1").status_code == 302


def test_admin_login_is_locked_too(client, users):
    from django.contrib.auth.models import User

    User.objects.create_superuser("boss", password=PASSWORD)
    for _ in range(5):
        client.post("/admin/login/", {"username": "boss", "password": "wrong-password-123"}, REMOTE_ADDR="10.2.0.1")
    response = client.post("/admin/login/?next=/admin/", {"username": "boss", "password": PASSWORD}, REMOTE_ADDR="10.2.0.2")
    assert response.status_code == 429


def test_basic_auth_is_locked_after_five_wrong_passwords(users, patient):
    codes = [APIClient().get("/api/patients/", HTTP_AUTHORIZATION=_basic("scheduler", "wrong-password-123")).status_code
             for _ in range(5)]
    assert codes[:4] == [403] * 4 and codes[4] == 429
    response = APIClient().get("/api/patients/", HTTP_AUTHORIZATION=_basic("scheduler", PASSWORD))
    assert response.status_code == 429
    assert int(response["Retry-After"]) == 15 * 60
    assert patient.mrn not in response.content.decode()


@pytest.mark.parametrize(
    "password,message",
    [
        ("password", "too common"),
        ("therapist2026", "too similar to the username"),
        ("739104826351", "entirely numeric"),
        ("Qz7!vb9#", "at least 12 characters"),
    ],
)
def test_weak_passwords_are_refused(users, password, message):
    with pytest.raises(ValidationError) as err:
        validate_password(password, user=users["therapist"])
    assert any(message in m for m in err.value.messages), err.value.messages


def test_a_long_passphrase_is_accepted(users):
    validate_password("pleura-linac-meridian-47", user=users["therapist"])


def test_admin_refuses_a_weak_password_for_a_new_user(client, users):
    from django.contrib.auth.models import User

    User.objects.create_superuser("boss", password=PASSWORD)
    client.force_login(User.objects.get(username="boss"))
    response = client.post("/admin/auth/user/add/", {"username": "newtherapist", "password1": "password", "password2": "password", "usable_password": "true"})
    assert response.status_code == 200 and "too common" in response.content.decode()
    assert not User.objects.filter(username="newtherapist").exists()


def test_token_login_then_token_requests_then_logout(users, patient):
    response = APIClient().post("/api/auth/token/", HTTP_AUTHORIZATION=_basic("oncologist", PASSWORD))
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert response.json()["expiry"]
    stored = AuthToken.objects.get(user=users["oncologist"])
    assert token not in (stored.digest, stored.token_key) and len(stored.digest) == 128  # only a SHA-512 digest is kept

    client = APIClient(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get("/api/patients/")
    assert response.status_code == 200 and [p["mrn"] for p in response.json()["results"]] == [patient.mrn]
    assert client.post("/api/auth/logout/").status_code == 204
    assert client.get("/api/patients/").status_code in (401, 403)
    assert not AuthToken.objects.filter(user=users["oncologist"]).exists()


def test_a_token_carries_the_users_role(users, patient):
    token = APIClient().post("/api/auth/token/", HTTP_AUTHORIZATION=_basic("researcher", PASSWORD)).json()["token"]
    assert APIClient(HTTP_AUTHORIZATION=f"Token {token}").get("/api/patients/").status_code == 403


def test_a_wrong_password_gets_no_token(users):
    response = APIClient().post("/api/auth/token/", HTTP_AUTHORIZATION=_basic("oncologist", "wrong-password-123"))
    assert response.status_code in (401, 403) and "token" not in response.json()
    assert not AuthToken.objects.exists()


def test_a_forged_token_is_refused(users, patient):
    response = APIClient(HTTP_AUTHORIZATION="Token " + "a" * 64).get("/api/patients/")
    assert response.status_code in (401, 403) and patient.mrn not in response.content.decode()


def test_api_requests_are_throttled_per_user(api, users, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "user", "3/minute")
    client = api("therapist")
    assert [client.get("/api/machines/").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert api("scheduler").get("/api/machines/").status_code == 200  # counted per user


def test_default_rates_are_set():
    assert SimpleRateThrottle.THROTTLE_RATES == {"anon": "60/minute", "user": "1200/minute", "token": "10/minute"}
