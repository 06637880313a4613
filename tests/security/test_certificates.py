"""Certificate rotation windows and expiry monitoring on the in-process gateway.

Rotation: during a rotation a peer has two valid certificates with the same
hpf:// identity — a new key from the same CA, or a certificate from a new CA
added beside the old one in that peer's trust bundle (applied by a reload).
Both must be accepted, as the same centre.

Expiry: ``hpf_gateway_certificate_expiry_timestamp_seconds{peer}`` holds our
own certificate and every trust anchor, is refreshed on reload and daily, and
a certificate within 30 days of expiry is logged as ``tls.certificate_expiring``.
"""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.web.client import ResponseNeverReceived

from gateway.config import load_config, render_toml
from gateway.demo import CENTRE
from gateway.metrics import GatewayMetrics
from gateway.pki import issue, make_ca, write_crl
from gateway.service import EXPIRY_WARNING_DAYS, CertificateWatch
from gateway.simulate.run import api_url
from gateway.listener import when_listening
from tests.integration.harness import OTHER_CENTRE, Harness, start_harness
from tests.security.support import Https, capture_logs

NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_harness(tmp_path, banks={})
    await when_listening(h.gateway.listeners["centre_api"])
    yield h
    await h.stop()


def _edit_config(h: Harness, change: Any) -> None:
    data = tomllib.loads(h.config.path.read_text(encoding="utf-8"))
    change(data)
    h.config.path.write_text(render_toml(data), encoding="utf-8")


def _gauge(h: Harness) -> dict[str, float]:
    metric = h.gateway.metrics.certificate_expiry
    return {s.labels["peer"]: s.value for m in metric.collect() for s in m.samples}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _anchor_label(scope: str, path: Path) -> str:
    cert = _cert(path)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    return f"trust:{scope}:{cn}:{cert.fingerprint(hashes.SHA256()).hex()[:12]}"


# -- rotation --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_certificates_of_one_centre_from_the_same_ca_are_both_accepted_as_that_centre(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    new_cert, new_key = issue(h.pki.ca_cert, h.pki.ca_key, tmp_path / "rotated", "centre", CENTRE)
    assert _cert(new_cert).serial_number != _cert(h.pki.cert("centre", CENTRE)).serial_number
    old = Https(h.pki.cert("centre", CENTRE), h.pki.key("centre", CENTRE), h.pki.ca_cert)
    new = Https(new_cert, new_key, h.pki.ca_cert)
    body = {"instruction_id": "ROT-1", "debit_account": "6200001111222233", "amount": "1.00",
            "purpose": "withdrawal",
            "creditor": {"account": "6200009999000011", "name": "张三", "bank_code": "105100000017"}}
    submitted = await old.call("POST", api_url(h.config) + "/v1/instructions", body)
    assert submitted.status == 202, submitted.body
    # The new certificate is the same centre: it sees that centre's instruction, and the
    # same body again is the same instruction (200), not another centre's conflict.
    read = await new.call("GET", api_url(h.config) + "/v1/instructions/ROT-1")
    assert read.status == 200 and read.body["instruction_id"] == "ROT-1"
    again = await new.call("POST", api_url(h.config) + "/v1/instructions", body)
    assert again.status == 200


@pytest_twisted.ensureDeferred
async def test_a_new_ca_added_to_the_centres_bundle_by_reload_admits_it_beside_the_old_one(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    new_ca, new_ca_key = make_ca(tmp_path / "new-ca", "centre CA 2027")
    new_cert, new_key = issue(new_ca, new_ca_key, tmp_path / "new-ca", "centre", CENTRE)
    url = api_url(h.config) + "/v1/results"
    via_new = Https(new_cert, new_key, h.pki.ca_cert)
    with pytest.raises(ResponseNeverReceived) as refused:  # not trusted yet: the handshake fails
        await via_new.call("GET", url)
    assert any(reason.check(SSL.Error) for reason in refused.value.reasons), refused.value.reasons

    bundle = tmp_path / "centre-bundle.crt"
    bundle.write_bytes(h.pki.ca_cert.read_bytes() + new_ca.read_bytes())
    _edit_config(h, lambda d: d["centres"][CENTRE].update(ca=str(bundle)))
    with capture_logs() as logs:
        h.gateway.reload()
    assert logs.named("gateway.reloaded"), logs.text()[-2000:]

    old_answer = await Https(h.pki.cert("centre", CENTRE), h.pki.key("centre", CENTRE),
                             h.pki.ca_cert).call("GET", url)
    new_answer = await via_new.call("GET", url)
    assert (old_answer.status, new_answer.status) == (200, 200)
    # The new CA is trusted for the centre API, but it names this centre only because its
    # certificate says so: another centre's certificate from the old CA is still itself.
    other = await Https(h.pki.cert("centre", OTHER_CENTRE), h.pki.key("centre", OTHER_CENTRE),
                        h.pki.ca_cert).call("GET", url)
    assert other.status == 200
    # ... and the new anchor is now in the expiry gauge under this centre's scope.
    assert _anchor_label(f"centre/{CENTRE}", new_ca) in _gauge(h)


# -- expiry ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_expiry_gauge_holds_our_certificate_and_every_anchor_at_start(harness: Harness) -> None:
    h = harness
    gauge = _gauge(h)
    assert gauge["gateway"] == _cert(h.config.tls.certificate).not_valid_after_utc.timestamp()
    label = _anchor_label("default", h.pki.ca_cert)
    assert gauge[label] == _cert(h.pki.ca_cert).not_valid_after_utc.timestamp()
    assert set(gauge) == {"gateway", label}


@pytest_twisted.ensureDeferred
async def test_a_certificate_expiring_within_30_days_is_warned_about_and_the_gauge_follows_reloads(
        harness: Harness, tmp_path: Path) -> None:
    h = harness
    soon = NOW + datetime.timedelta(days=10)
    cert, key = issue(h.pki.ca_cert, h.pki.ca_key, tmp_path / "short", "gateway", "main",
                      not_after=soon.replace(microsecond=0))
    _edit_config(h, lambda d: d["tls"].update(certificate=str(cert), private_key=str(key)))
    with capture_logs() as logs:
        h.gateway.reload()
    [warning] = logs.named("tls.certificate_expiring")
    assert warning["peer"] == "gateway" and 9 < warning["days_left"] <= 10 and warning["expired"] is False
    assert _gauge(h)["gateway"] == soon.replace(microsecond=0).timestamp()
    # The anchor (ten years) is not warned about.
    assert all(e["peer"] == "gateway" for e in logs.named("tls.certificate_expiring"))


def test_the_watch_checks_at_start_and_then_daily(tmp_path: Path) -> None:
    from gateway.demo import write_demo_config
    from gateway.pki import init_dev_pki

    pki = init_dev_pki(tmp_path / "keys", banks=["B001", "B002", "B003"], centres=[CENTRE])
    soon = (NOW + datetime.timedelta(days=EXPIRY_WARNING_DAYS - 1)).replace(microsecond=0)
    (tmp_path / "keys" / "gateway.crt").unlink()
    issue(pki.ca_cert, pki.ca_key, tmp_path / "keys", "gateway", "main", not_after=soon)
    config = load_config(write_demo_config(tmp_path))
    clock = Clock()
    clock.advance(NOW.timestamp())
    metrics = GatewayMetrics()
    watch = CertificateWatch(config, metrics, clock, wall=clock.seconds)
    with capture_logs() as logs:
        watch.startService()
        assert len(logs.named("tls.certificate_expiring")) == 1
        clock.advance(86400 - 1)
        assert len(logs.named("tls.certificate_expiring")) == 1
        clock.advance(1)
        assert len(logs.named("tls.certificate_expiring")) == 2
        clock.advance(86400)
        # Two days on, the certificate is one day closer to its end.
        last = logs.named("tls.certificate_expiring")[-1]
        assert len(logs.named("tls.certificate_expiring")) == 3
        assert EXPIRY_WARNING_DAYS - 4 < last["days_left"] < EXPIRY_WARNING_DAYS - 2
        watch.stopService()
    assert metrics.certificate_expiry.labels("gateway")._value.get() == soon.timestamp()


def test_a_stale_crl_is_logged_as_an_error(tmp_path: Path) -> None:
    from gateway.demo import write_demo_config
    from gateway.pki import init_dev_pki

    pki = init_dev_pki(tmp_path / "keys", banks=["B001", "B002", "B003"], centres=[CENTRE])
    crl = write_crl(pki.ca_cert, pki.ca_key, tmp_path / "keys" / "ca.crl", days=1)
    path = write_demo_config(tmp_path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["tls"]["crls"] = [str(crl)]
    path.write_text(render_toml(data), encoding="utf-8")
    config = load_config(path)
    clock = Clock()
    watch = CertificateWatch(config, GatewayMetrics(), clock, wall=clock.seconds)
    with capture_logs() as logs:
        clock.advance(NOW.timestamp() + 3600)
        watch.check()
        assert logs.named("tls.crl_expiring") and not logs.named("tls.crl_stale")
        clock.advance(86400)
        watch.check()
        assert logs.named("tls.crl_stale")
