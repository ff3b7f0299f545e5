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


def sandbox_employer(emulator, **kwargs):
    app = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=emulator, max_retries=0)
    conn = app.sandbox.connections.create(provider_id="gusto", **kwargs)
    return conn, finch.Finch(access_token=conn.access_token, base_url=emulator, max_retries=0)


def test_organization_data_pages_batches_and_per_item_errors(emulator):
    products = ["company", "directory", "individual", "employment", "ssn"]
    conn, employer = sandbox_employer(emulator, products=products, employee_size=250)
    entity = [conn.entity_id]

    # The SDK's auto-paging follows `paging.count` through every page.
    everyone = list(employer.hris.directory.list(limit=100, entity_ids=entity))
    assert len(everyone) == 250 and len({p.id for p in everyone}) == 250
    first = employer.hris.directory.list(limit=100, offset=0, entity_ids=entity)
    assert first.paging.count == 250 and len(first.individuals) == 100
    assert sum(1 for p in everyone if p.manager is None) == 1  # one person leads the company
    assert any(p.is_active is False for p in everyone)  # some have left

    ids = [p.id for p in everyone[:3]]
    missing = "00000000-0000-4000-8000-000000000000"
    people = list(employer.hris.individuals.retrieve_many(
        requests=[{"individual_id": i} for i in ids + [missing]], options={"include": ["ssn"]}, entity_ids=entity))
    assert [r.code for r in people] == [200, 200, 200, 404]
    assert people[0].body.dob and people[0].body.ssn and people[0].body.emails
    assert people[3].body.finch_code == "individual_not_found"
    jobs = list(employer.hris.employments.retrieve_many(requests=[{"individual_id": i} for i in ids], entity_ids=entity))
    assert all(j.code == 200 and j.body.income.currency == "usd" and j.body.source_id for j in jobs)

    with pytest.raises(finch.UnprocessableEntityError) as too_big:
        employer.hris.directory.list(limit=10_001, entity_ids=entity)
    assert too_big.value.body["finch_code"] == "page_size_limit_exceeded"
    with pytest.raises(finch.UnprocessableEntityError) as too_many:
        employer.hris.employments.retrieve_many(requests=[{"individual_id": missing}] * 10_001, entity_ids=entity)
    assert too_many.value.body["finch_code"] == "batch_limit_exceeded"
    # The emulator answered as Finch does, and still noted that the request broke the spec.
    violations = control(emulator, "/_emulator/violations")
    assert len(violations) == 1 and "employment" in violations[0] and len(violations[0]) < 400


def test_products_not_granted_ssn_withheld_and_data_not_ready(emulator):
    conn, employer = sandbox_employer(emulator, products=["company", "directory", "individual"])
    someone = next(iter(employer.hris.directory.list(entity_ids=[conn.entity_id]))).id
    with pytest.raises(finch.PermissionDeniedError) as denied:
        employer.hris.employments.retrieve_many(requests=[{"individual_id": someone}])
    assert denied.value.body["name"] == "insufficient_scope_error"
    person = list(employer.hris.individuals.retrieve_many(requests=[{"individual_id": someone}],
                                                          options={"include": ["ssn"]}))[0]
    assert person.code == 200 and person.body.ssn is None  # `ssn` was not granted

    for reason in ["data_sync_in_progress", "pending", "accountant_setup_pending"]:
        control(emulator, f"/_emulator/connections/{conn.connection_id}/data_sync", {"finch_code": reason})
        raw = employer.hris.directory.with_raw_response.list()
        assert raw.status_code == 202 and raw.http_response.json()["finch_code"] == reason
    ended = control(emulator, f"/_emulator/connections/{conn.connection_id}/data_sync", {"finch_code": None})
    assert ended["finch_code"] is None
    assert employer.hris.company.retrieve().legal_name
    assert control(emulator, "/_emulator/violations") == []


def test_sandbox_changes_and_control_changes_send_data_webhooks(emulator):
    import base64
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"])).decode()
            received.append((body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = base64.b64encode(os.urandom(32)).decode()
    control(emulator, "/_emulator/webhooks", {"url": f"http://127.0.0.1:{server.server_port}/", "secret": secret})
    try:
        conn, employer = sandbox_employer(emulator, products=["company", "directory", "individual", "employment"],
                                          employee_size=5)
        # The snapshot time moves only when the data changed.
        before = employer.account.introspect().connection_status.last_successful_sync
        assert employer.account.introspect().connection_status.last_successful_sync == before
        raw = employer.hris.directory.with_raw_response.list()
        assert raw.headers["finch-data-retrieved"]
        control(emulator, "/_emulator/clock", {"advance_seconds": 60})
        hired = employer.sandbox.directory.create(body=[{"first_name": "Ada", "last_name": "Lovelace"}])
        assert employer.account.introspect().connection_status.last_successful_sync > before
        assert len(hired) == 1
        people = list(employer.hris.directory.list())
        assert len(people) == 6 and people[-1].first_name == "Ada"
        someone = people[1].id
        updated = employer.sandbox.individual.update(someone, last_name="Hopper")
        assert updated.last_name == "Hopper"
        job = employer.sandbox.employment.update(someone, title="Rear Admiral")
        assert job.title == "Rear Admiral"
        renamed = employer.sandbox.company.update(accounts=None, departments=None, ein=None, entity=None,
                                                  legal_name="Renamed Co", locations=None, primary_email=None,
                                                  primary_phone_number=None)
        assert renamed.legal_name == "Renamed Co"
        assert employer.hris.company.retrieve().legal_name == "Renamed Co"
        gone = control(emulator, f"/_emulator/connections/{conn.connection_id}/people",
                       {"action": "terminate", "individual_id": someone})
        assert gone["events"] == ["directory.updated", "employment.updated"]
        assert gone["webhook_statuses"] == [200, 200]
        job = list(employer.hris.employments.retrieve_many(requests=[{"individual_id": someone}]))[0]
        assert job.body.is_active is False and job.body.employment_status == "terminated"
        removed = control(emulator, f"/_emulator/connections/{conn.connection_id}/people",
                          {"action": "remove", "individual_id": someone})
        assert removed["events"] == ["directory.deleted", "individual.deleted", "employment.deleted"]
        assert len(list(employer.hris.directory.list())) == 5

        client = finch.Finch(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, webhook_secret=secret, base_url=emulator)
        # Every delivery is a signed event Finch's SDK verifies and parses (ids only, never the record).
        events = [client.webhooks.unwrap(body, headers) for body, headers in received]
        kinds = {e.event_type for e in events}
        assert {"directory.created", "individual.updated", "employment.updated", "company.updated",
                "directory.deleted"} <= kinds
        for e in events:
            if e.event_type.startswith(("directory.", "individual.", "employment.")):
                assert e.data.individual_id and e.connection_id == conn.connection_id
        assert control(emulator, "/_emulator/violations") == []
    finally:
        server.shutdown()


def test_payments_pay_statements_paging_caps_and_statements_still_being_fetched(emulator):
    products = ["company", "directory", "individual", "employment", "payment", "pay_statement"]
    # Enough people that both pay groups have someone (hourly people are paid biweekly).
    conn, employer = sandbox_employer(emulator, products=products, employee_size=200)
    entity = [conn.entity_id]
    summary = control(emulator, f"/_emulator/connections/{conn.connection_id}/payroll")

    # Two years and the year to date, in one answer (the endpoint has no paging).
    payments = list(employer.hris.payments.list(start_date=summary["first_pay_date"],
                                                end_date=summary["last_pay_date"], entity_ids=entity))
    assert len(payments) == summary["payments"] > 60
    assert {f for p in payments for f in p.pay_frequencies} == {"bi_weekly", "semi_monthly"}
    assert all(p.pay_period.start_date <= p.pay_period.end_date and p.gross_pay.currency == "usd" for p in payments)
    window = list(employer.hris.payments.list(start_date=payments[3].pay_date, end_date=payments[3].pay_date))
    assert payments[3].id in {p.id for p in window} and all(p.pay_date == payments[3].pay_date for p in window)

    # One payment paged on its own; the pages add up to the payment.
    one = max(payments, key=lambda p: len(p.individual_ids))
    statements, offset = [], 0
    while True:
        page = list(employer.hris.pay_statements.retrieve_many(
            requests=[{"payment_id": one.id, "limit": 7, "offset": offset}], entity_ids=entity))[0]
        assert page.code == 200 and page.body.paging.count == len(one.individual_ids)
        statements += page.body.pay_statements
        offset += 7
        if offset >= page.body.paging.count:
            break
    assert sorted(s.individual_id for s in statements) == sorted(one.individual_ids)
    assert sum(s.gross_pay.amount for s in statements) == one.gross_pay.amount
    assert sum(s.net_pay.amount for s in statements) == one.net_pay.amount

    # Ten payments a request, each answered on its own.
    ten = list(employer.hris.pay_statements.retrieve_many(
        requests=[{"payment_id": p.id, "limit": 5000} for p in payments[:10]], entity_ids=entity))
    assert [r.payment_id for r in ten] == [p.id for p in payments[:10]]
    for r, p in zip(ten, payments[:10]):
        assert sum(s.gross_pay.amount for s in r.body.pay_statements) == p.gross_pay.amount

    with pytest.raises(finch.UnprocessableEntityError) as too_many:
        employer.hris.pay_statements.retrieve_many(requests=[{"payment_id": one.id}] * 11, entity_ids=entity)
    assert too_many.value.body["finch_code"] == "batch_limit_exceeded"
    with pytest.raises(finch.UnprocessableEntityError) as too_big:
        employer.hris.pay_statements.retrieve_many(requests=[{"payment_id": one.id, "limit": 5001}], entity_ids=entity)
    assert too_big.value.body["finch_code"] == "page_size_limit_exceeded"

    # The latest payment's statements are still being fetched: a 202 inside the 200, for it alone.
    latest = payments[-1]
    control(emulator, f"/_emulator/connections/{conn.connection_id}/payroll", {"pending_latest": 1})
    missing = "00000000-0000-4000-8000-000000000000"
    mixed = list(employer.hris.pay_statements.retrieve_many(
        requests=[{"payment_id": latest.id}, {"payment_id": payments[0].id}, {"payment_id": missing}]))
    assert [r.code for r in mixed] == [202, 200, 404]
    assert mixed[0].body.finch_code == "data_sync_in_progress"
    assert mixed[2].body.finch_code == "payment_not_found"
    control(emulator, f"/_emulator/connections/{conn.connection_id}/payroll", {})
    again = list(employer.hris.pay_statements.retrieve_many(requests=[{"payment_id": latest.id}]))
    assert again[0].code == 200 and again[0].body.pay_statements

    # A payment made through the sandbox, with the statements given.
    someone = payments[-1].individual_ids[0]
    made = employer.sandbox.payment.create(
        start_date=latest.pay_date, end_date=latest.pay_date,
        pay_statements=[{"individual_id": someone, "gross_pay": 123_400, "net_pay": 100_000,
                         "earnings": [{"type": "bonus", "name": "Spot Bonus", "amount": 123_400}]}])
    listed = list(employer.hris.payments.list(start_date=latest.pay_date, end_date=latest.pay_date))
    assert made.payment_id in {p.id for p in listed}
    got = list(employer.hris.pay_statements.retrieve_many(requests=[{"payment_id": made.payment_id}]))[0]
    assert got.code == 200 and got.body.pay_statements[0].gross_pay.amount == 123_400
    assert got.body.pay_statements[0].earnings[0].currency == "usd"

    # The emulator answered the two oversized requests as Finch does, and noted that they broke the spec.
    violations = control(emulator, "/_emulator/violations")
    assert len(violations) == 2 and all("pay-statement" in v for v in violations), violations
