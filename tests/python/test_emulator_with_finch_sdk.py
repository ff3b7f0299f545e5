"""Finch's official Python SDK against the emulator: every call Perch relies on must parse,
and the emulator's referee (Finch's OpenAPI document) must find nothing wrong with either the
SDK's requests or the emulator's answers."""

import urllib.parse

import finch
import httpx
import pytest

from conftest import CLIENT_ID, CLIENT_SECRET, control


def connect(base, connect_url, state="s-1"):
    """Logs in at the emulator's Connect page; returns the code from the redirect."""
    r = httpx.post(connect_url + "&state=" + state,
                   data={"provider": "gusto", "username": "good_user", "password": "good_pass"})
    assert r.status_code == 302, r.text
    q = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers["location"]).query)
    assert q["state"] == [state]
    return q["code"][0]


def test_connect_flow_through_the_sdk(emulator):
    app = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=emulator, max_retries=0)
    session = app.connect.sessions.new(customer_id="acme", customer_name="Acme", products=["company", "directory"],
                                       redirect_uri="https://app.test/cb", sandbox="finch")
    assert session.connect_url.startswith(emulator + "/authorize?session=")
    again = app.connect.sessions.new(customer_id="acme", customer_name="Acme Corp", products=["company"],
                                     redirect_uri="https://app.test/cb")
    assert again.session_id == session.session_id  # staged session refreshed

    code = connect(emulator, session.connect_url)
    token = app.access_tokens.create(code=code, redirect_uri="https://app.test/cb")
    assert token.token_type == "bearer" and token.customer_id == "acme" and token.entity_ids

    with pytest.raises(finch.BadRequestError) as used:
        app.access_tokens.create(code=code, redirect_uri="https://app.test/cb")
    assert used.value.body["name"] == "invalid_grant_error"

    employer = finch.Finch(access_token=token.access_token, base_url=emulator, max_retries=0)
    info = employer.account.introspect()
    assert info.connection_id == token.connection_id
    assert info.connection_status.status == "connected"
    company = employer.hris.company.retrieve()
    assert company.legal_name == "Acme Corp, Inc."

    with pytest.raises(finch.BadRequestError) as exists:
        app.connect.sessions.new(customer_id="acme", customer_name="Acme", products=["company"])
    assert exists.value.body["finch_code"] == "connection_already_exists"
    assert exists.value.body["context"]["connection_id"] == token.connection_id

    reauth = app.connect.sessions.reauthenticate(connection_id=token.connection_id, redirect_uri="https://app.test/cb")
    code2 = connect(emulator, reauth.connect_url, state="s-2")
    token2 = app.access_tokens.create(code=code2, redirect_uri="https://app.test/cb")
    assert token2.connection_id == token.connection_id and token2.access_token != token.access_token

    assert employer.account.disconnect().status == "success"
    with pytest.raises(finch.AuthenticationError):
        employer.account.introspect()

    assert control(emulator, "/_emulator/violations") == []
    seen = control(emulator, "/_emulator/requests")
    assert seen and all(r["request_id"] for r in seen)


def test_codes_expire_after_ten_minutes(emulator):
    app = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=emulator, max_retries=0)
    s = app.connect.sessions.new(customer_id="late", customer_name="Late", products=["company"], redirect_uri="https://app.test/cb")
    code = connect(emulator, s.connect_url)
    control(emulator, "/_emulator/clock", {"advance_seconds": 601})
    with pytest.raises(finch.BadRequestError) as expired:
        app.access_tokens.create(code=code, redirect_uri="https://app.test/cb")
    assert expired.value.body["name"] == "invalid_grant_error"


def test_wrong_credentials_and_sandbox_and_reauth_flip(emulator):
    bad = finch.Finch(client_id=CLIENT_ID, client_secret="nope", base_url=emulator, max_retries=0)
    with pytest.raises(finch.AuthenticationError) as denied:
        bad.connect.sessions.new(customer_id="x", customer_name="X", products=["company"])
    assert denied.value.body["finch_code"] == "invalid_client"

    app = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=emulator, max_retries=0)
    conn = app.sandbox.connections.create(provider_id="gusto")
    employer = finch.Finch(access_token=conn.access_token, base_url=emulator, max_retries=0)
    employer.sandbox.connections.accounts.update(connection_status="reauth")
    assert employer.account.introspect().connection_status.status == "reauth"
    with pytest.raises(finch.AuthenticationError) as reauth:
        employer.hris.company.retrieve()
    assert reauth.value.body["finch_code"] == "reauthenticate_user"

    control(emulator, f"/_emulator/connections/{conn.connection_id}/status", {"status": "connected"})
    assert employer.account.introspect().connection_status.status == "connected"
    assert control(emulator, "/_emulator/violations") == []


def test_injected_faults_carry_finch_bodies_and_request_ids(emulator):
    control(emulator, "/_emulator/faults", {"path": "/introspect", "status": 429, "retry_after": 1, "times": 1})
    app = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=emulator, max_retries=0)
    conn = app.sandbox.connections.create(provider_id="gusto")
    employer = finch.Finch(access_token=conn.access_token, base_url=emulator, max_retries=0)
    with pytest.raises(finch.RateLimitError) as limited:
        employer.account.introspect()
    assert limited.value.response.headers["finch-request-id"]
    assert limited.value.response.headers["retry-after"] == "1"
    assert employer.account.introspect().connection_id == conn.connection_id  # fault used up


def test_webhook_signatures_verify_with_finchs_verifier(emulator):
    import base64
    import json
    import os
    import time

    secret = base64.b64encode(os.urandom(32)).decode()
    body = json.dumps({"connection_id": "c-1", "company_id": "c", "account_id": "a", "event_type": "account.updated",
                       "data": {"status": "reauth", "authentication_method": {"type": "credential"}}})
    headers = control(emulator, "/_emulator/webhooks/sign", {"body": body, "secret": secret})
    assert headers["finch-event-id"].startswith("msg_")
    assert abs(int(headers["finch-timestamp"]) - time.time()) < 60
    client = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, webhook_secret=secret, base_url=emulator)
    event = client.webhooks.unwrap(body, headers)
    assert event.event_type == "account.updated"
    with pytest.raises(Exception):
        client.webhooks.verify_signature(body.replace("reauth", "connected"), headers)
    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(Exception):
        client.webhooks.verify_signature(body, headers, secret=other)


def test_finchs_own_test_vector_signs_identically(emulator):
    # finch-api-node tests/api-resources/webhooks.test.ts
    headers = control(emulator, "/_emulator/webhooks/sign", {
        "body": '{"company_id":"720be419-0293-4d32-a707-32179b0827ab"}',
        "secret": "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH",
        "event_id": "msg_2Lh9KRb0pzN4LePd3XiA4v12Axj", "timestamp": 1676312382})
    assert headers["finch-signature"] == "v1,m7y0TV2C+hlHxU42wCieApTSTaA8/047OAplBqxIV/s="


def test_multi_entity_connections_and_disconnect_entity(emulator):
    import re

    app = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=emulator, max_retries=0)
    s = app.connect.sessions.new(customer_id="multi", customer_name="Multi", products=["company"],
                                 redirect_uri="https://app.test/cb")
    # Finch Sandbox's `multi_entity` password shows the entity picker.
    login = {"provider": "gusto", "username": "good_user", "password": "multi_entity"}
    picker = httpx.post(s.connect_url + "&state=m", data=login)
    assert picker.status_code == 200
    ids = re.findall(r'name="entity" value="([^"]+)"', picker.text)
    assert len(ids) == 3
    r = httpx.post(s.connect_url + "&state=m", data={**login, "picked": "1", "entity": ids[:2]})
    assert r.status_code == 302, r.text
    code = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers["location"]).query)["code"][0]
    token = app.access_tokens.create(code=code, redirect_uri="https://app.test/cb")
    assert sorted(token.entity_ids) == sorted(ids[:2])

    employer = finch.Finch(access_token=token.access_token, base_url=emulator, max_retries=0)
    info = employer.account.introspect()
    assert [e.name for e in info.entities] == ["Multi, Inc.", "Multi East"]
    assert employer.account.disconnect_entity(entity_ids=[ids[0]]).status == "success"
    statuses = {e.id: e.status for e in employer.account.introspect().entities}
    assert statuses == {ids[0]: "disconnected", ids[1]: "connected"}
    with pytest.raises(finch.BadRequestError) as unknown:
        employer.account.disconnect_entity(entity_ids=[ids[2]])
    assert unknown.value.body["errors"] == [{"entityId": ids[2], "error": "NOT_FOUND"}]
    # The connection and its token stay for the other entity.
    assert employer.account.introspect().connection_status.status == "connected"
    assert control(emulator, "/_emulator/violations") == []
