#!/usr/bin/python3
"""A stand-in for DigiCert ONE's Enterprise PKI Manager (mPKI) REST API, for tests.

It listens with TLS on loopback and speaks the calls certconnector's ca-digicert plugin makes
(see README.md for which behaviours come from DigiCert's published API and real clients, and
which are guesses):

  GET  /mpki/api/v1/hello                             service status (no authentication)
  GET  /mpki/api/v1/profile/{id}                      a certificate profile
  POST /mpki/api/v1/certificate                       issue (201), or hold for approval (201, pending)
  POST /mpki/api/v1/certificate-pickup/{request_id}   collect a held request
  GET  /mpki/api/v1/certificate/{serial}              a certificate's details
  PUT  /mpki/api/v1/certificate/{serial}/revoke       revoke (204)
  GET  /crl/issuing.crl                               the issuing CA's CRL (DER, no authentication)

Authentication: the `x-api-key` header, or a client certificate signed by --client-ca.

Test-only control endpoints (no authentication; loopback only):
  POST /_standin/approve/{request_id}      approve a held request
  POST /_standin/deny/{request_id}         reject it; body {"reason": "..."}
  POST /_standin/fault                     {"mode": "429"|"500"|"503"|"malformed"|"oversized"|"hang"|"none",
                                            "count": n (-1: until reset), "retry_after": s, "seconds": s}
  GET  /_standin/last-request              the last issue request body as received (JSON)
  GET  /_standin/stats                     calls per endpoint
  GET  /_standin/pending                   request ids waiting for approval

Only the Python standard library and python3-cryptography are used.
"""

import argparse
import base64
import datetime
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
MAX_BODY = 1 << 20
REASONS = {  # DigiCert ONE's revocation_reason values -> x509 reason flags
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "remove_from_crl": x509.ReasonFlags.remove_from_crl,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aa_compromise": x509.ReasonFlags.aa_compromise,
}
SUBJECT_FIELDS = {  # attributes.subject keys -> OIDs (strings; lists for the multi-valued ones)
    "common_name": NameOID.COMMON_NAME,
    "organization_name": NameOID.ORGANIZATION_NAME,
    "organization_units": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "country": NameOID.COUNTRY_NAME,
    "state": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "email": NameOID.EMAIL_ADDRESS,
    "serial_number": NameOID.SERIAL_NUMBER,
}


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def der_utf8(text):
    data = text.encode()
    n = len(data)
    if n < 128:
        return b"\x0c" + bytes([n]) + data
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x0c" + bytes([0x80 | len(length)]) + length + data


class Ca:
    """A root and an issuing CA (EC P-256, or RSA-2048 with --ca-key rsa: SCEP clients such as
    micromdm's scepclient encrypt to every CA certificate and speak only RSA), made at start, and
    everything issued since."""

    def __init__(self, state_dir, crl_url, key_type="ec"):
        self.crl_url = crl_url
        t = now()
        new_key = (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)) if key_type == "rsa" \
            else (lambda: ec.generate_private_key(ec.SECP256R1()))
        self.root_key = new_key()
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stand-in DigiCert Root CA"),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certconnector tests")])
        self.root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(t - datetime.timedelta(hours=1)).not_valid_after(t + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()), critical=False)
                     .sign(self.root_key, hashes.SHA256()))
        self.key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stand-in DigiCert Issuing CA"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certconnector tests")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root_name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(t - datetime.timedelta(hours=1)).not_valid_after(t + datetime.timedelta(days=1825))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                                    critical=False)
                     .sign(self.root_key, hashes.SHA256()))
        self.issued = {}  # serial (upper-case hex) -> record
        self.crl_number = 0
        self.crl_der = b""
        self.make_crl()
        pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
        with open(os.path.join(state_dir, "ca-chain.pem"), "w") as f:
            f.write(pem(self.cert) + pem(self.root))
        with open(os.path.join(state_dir, "root.pem"), "w") as f:
            f.write(pem(self.root))

    def chain(self):
        return [
            {"subject_dn": self.cert.subject.rfc4514_string(), "blob": self.cert.public_bytes(serialization.Encoding.PEM).decode()},
            {"subject_dn": self.root.subject.rfc4514_string(), "blob": self.root.public_bytes(serialization.Encoding.PEM).decode()},
        ]

    def sign(self, csr, subject, san, days, profile_id, seat_id):
        t = now()
        names = []
        for e in san.get("emails") or []:
            names.append(x509.RFC822Name(e))
        for d in san.get("dns_names") or []:
            names.append(x509.DNSName(d))
        for u in san.get("user_principal_names") or []:
            names.append(x509.OtherName(UPN_OID, der_utf8(u)))
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                   .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(t - datetime.timedelta(minutes=5)).not_valid_after(t + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH,
                                                         x509.ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                   .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                       [x509.UniformResourceIdentifier(self.crl_url)], None, None, None)]), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        serial = format(cert.serial_number, "X")
        self.issued[serial] = {"cert": cert, "status": "issued", "profile_id": profile_id, "seat_id": seat_id,
                               "revocation": None}
        return serial, cert

    def make_crl(self):
        self.crl_number += 1
        t = now()
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject).last_update(t)
             .next_update(t + datetime.timedelta(days=1))
             .add_extension(x509.CRLNumber(self.crl_number), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
        for serial, rec in self.issued.items():
            if rec["revocation"]:
                reason, when = rec["revocation"]
                entry = (x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(when))
                if reason != x509.ReasonFlags.unspecified:
                    entry = entry.add_extension(x509.CRLReason(reason), critical=False)
                b = b.add_revoked_certificate(entry.build())
        self.crl_der = b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class State:
    def __init__(self, args, ca):
        self.lock = threading.Lock()
        self.ca = ca
        self.api_key = args.api_key
        self.profiles = {}  # id -> "instant" | "manual"
        for p in args.profile:
            pid, _, mode = p.partition(":")
            self.profiles[pid] = mode or "instant"
        self.requests = {}  # request_id -> {"status", "body", "serial", "reason"}
        self.last_request = None
        self.fault = {"mode": "none", "count": 0}
        self.stats = {}


def error_body(code, message, field=None):
    e = {"code": code, "message": message}
    if field:
        e["field"] = field
    return {"errors": [e]}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DigiCertOneStandIn/1.0"

    def log_message(self, fmt, *args):
        sys.stderr.write("digicert stand-in: " + (fmt % args) + "\n")

    # ---- plumbing ----
    def send(self, status, body=None, content_type="application/json", headers=None):
        data = b""
        if body is not None:
            data = body if isinstance(body, bytes) else (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            self.send(413, error_body("request_too_large", "request body exceeds %d bytes" % MAX_BODY))
            return None
        return self.rfile.read(n) if n else b""

    def json_body(self):
        raw = self.read_body()
        if raw is None:
            return None
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.send(400, error_body("invalid_json", "request body is not valid JSON"))
            return None
        if not isinstance(body, dict):
            self.send(400, error_body("invalid_json", "request body must be a JSON object"))
            return None
        return body

    def authenticated(self):
        key = self.headers.get("x-api-key")
        if key is not None and self.server.state.api_key and key == self.server.state.api_key:
            self.count("auth:api_key")
            return True
        try:
            if self.connection.getpeercert():
                self.count("auth:client_certificate")
                return True
        except (AttributeError, ValueError):
            pass
        self.send(401, error_body("access_denied", "Invalid or missing API key or client certificate"))
        return False

    def faulted(self, endpoint):
        """Serves a configured fault instead of the answer; True when it did."""
        s = self.server.state
        with s.lock:
            f = dict(s.fault)
            if f["mode"] == "none" or f["count"] == 0:
                return False
            if s.fault["count"] > 0:
                s.fault["count"] -= 1
            s.stats["fault:" + f["mode"]] = s.stats.get("fault:" + f["mode"], 0) + 1
        mode = f["mode"]
        if mode == "429":
            self.send(429, error_body("rate_limit_exceeded", "Too many requests"),
                      headers={"Retry-After": str(f.get("retry_after", 1))})
        elif mode in ("500", "502", "503"):
            self.send(int(mode), "<html><body><h1>%s Service Unavailable</h1></body></html>" % mode, "text/html")
        elif mode == "malformed":
            self.send(201 if endpoint == "issue" else 200, '{"serial_number": 12, "certificate": ["not", "a", "string"]')
        elif mode == "oversized":
            filler = "A" * (8 << 20)
            self.send(201 if endpoint == "issue" else 200, '{"serial_number":"01","certificate":"' + filler + '"}')
        elif mode == "hang":
            time.sleep(float(f.get("seconds", 30)))
            self.send(504, "<html>gateway timeout</html>", "text/html")
        else:
            return False
        return True

    def count(self, endpoint):
        with self.server.state.lock:
            self.server.state.stats[endpoint] = self.server.state.stats.get(endpoint, 0) + 1

    # ---- routing ----
    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def route(self, method):
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/_standin/"):
                return self.control(method, path)
            if method == "GET" and path == "/crl/issuing.crl":
                self.count("crl")
                with self.server.state.lock:
                    crl = self.server.state.ca.crl_der
                return self.send(200, crl, "application/pkix-crl")
            if method == "GET" and path == "/mpki/api/v1/hello":
                return self.send(200, "Hello from DigiCert ONE - Enterprise PKI Manager REST API!", "text/plain;charset=utf-8")
            routes = [
                ("GET", r"/mpki/api/v1/profile/([^/]+)", "profile", self.get_profile),
                ("POST", r"/mpki/api/v1/certificate", "issue", self.issue),
                ("POST", r"/mpki/api/v1/certificate-pickup/([^/]+)", "pickup", self.pickup),
                ("GET", r"/mpki/api/v1/certificate/([0-9A-Fa-f]+)", "lookup", self.lookup),
                ("PUT", r"/mpki/api/v1/certificate/([0-9A-Fa-f]+)/revoke", "revoke", self.revoke),
            ]
            for m, pattern, endpoint, fn in routes:
                match = re.fullmatch(pattern, path)
                if match and m == method:
                    self.count(endpoint)
                    if self.faulted(endpoint):
                        return
                    if not self.authenticated():
                        return
                    return fn(*match.groups())
            self.send(404, error_body("not_found", "no such endpoint: %s %s" % (method, path)))
        except BrokenPipeError:
            pass

    # ---- the API ----
    def get_profile(self, pid):
        s = self.server.state
        if pid not in s.profiles:
            return self.send(404, error_body("not_found", "Profile not found", "profile_id"))
        self.send(200, {"id": pid, "name": "stand-in profile " + pid, "status": "active",
                        "enrollment_method": "rest_api",
                        "approval": "manual_approval" if s.profiles[pid] == "manual" else "none"})

    def issue(self):
        body = self.json_body()
        if body is None:
            return
        s = self.server.state
        with s.lock:
            s.last_request = body
        pid = (body.get("profile") or {}).get("id") if isinstance(body.get("profile"), dict) else None
        if not pid or pid not in s.profiles:
            return self.send(400, error_body("invalid_input", "Profile not found or inactive", "profile.id"))
        seat = body.get("seat") if isinstance(body.get("seat"), dict) else {}
        if not isinstance(seat.get("seat_id"), str) or not seat.get("seat_id"):
            return self.send(400, error_body("invalid_input", "seat.seat_id is required", "seat.seat_id"))
        if body.get("delivery_format", "x509") != "x509":
            return self.send(400, error_body("invalid_input", "unsupported delivery_format", "delivery_format"))
        try:
            csr = x509.load_pem_x509_csr((body.get("csr") or "").encode())
            if not csr.is_signature_valid:
                raise ValueError("signature")
        except ValueError:
            return self.send(400, error_body("invalid_csr", "CSR is not a valid PKCS#10 request", "csr"))
        validity = body.get("validity") or {"unit": "years", "duration": 1}
        unit, duration = validity.get("unit"), validity.get("duration")
        if unit not in ("days", "months", "years") or not isinstance(duration, int) or duration < 1:
            return self.send(400, error_body("invalid_input", "validity must be {unit: days|months|years, duration: n}",
                                             "validity"))
        days = duration * {"days": 1, "months": 30, "years": 365}[unit]
        attrs = body.get("attributes") or {}
        subj = attrs.get("subject") or {}
        if not subj.get("common_name"):
            return self.send(400, error_body("invalid_input", "Required field missing: common_name",
                                             "attributes.subject.common_name"))
        rdns = []
        for key, oid in SUBJECT_FIELDS.items():
            v = subj.get(key)
            for item in (v if isinstance(v, list) else [v] if v else []):
                rdns.append(x509.NameAttribute(oid, str(item)))
        san = ((attrs.get("extensions") or {}).get("san")) or {}
        if s.profiles[pid] == "manual":
            rid = str(uuid.uuid4())
            with s.lock:
                s.requests[rid] = {"status": "pending", "csr": csr, "subject": x509.Name(rdns), "san": san,
                                   "days": days, "profile": pid, "seat": seat["seat_id"],
                                   "chain": bool(body.get("include_ca_chain")), "serial": None, "reason": ""}
            return self.send(201, {"request_id": rid, "status": "pending"})
        with s.lock:
            serial, cert = s.ca.sign(csr, x509.Name(rdns), san, days, pid, seat["seat_id"])
        self.send(201, self.issued_body(serial, cert, bool(body.get("include_ca_chain"))))

    def issued_body(self, serial, cert, chain):
        out = {"serial_number": serial, "delivery_format": "x509",
               "certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}
        if chain:
            out["ca_chain"] = self.server.state.ca.chain()
        return out

    def pickup(self, rid):
        s = self.server.state
        with s.lock:
            r = s.requests.get(rid)
            if r is None:
                return self.send(404, error_body("not_found", "Certificate request not found", "request_id"))
            if r["status"] == "pending":
                return self.send(200, {"request_id": rid, "status": "pending"})
            if r["status"] == "rejected":
                return self.send(200, {"request_id": rid, "status": "rejected", "reason": r["reason"]})
            if r["serial"] is None:
                serial, _ = s.ca.sign(r["csr"], r["subject"], r["san"], r["days"], r["profile"], r["seat"])
                r["serial"] = serial
            cert = s.ca.issued[r["serial"]]["cert"]
        body = self.issued_body(r["serial"], cert, r["chain"])
        body.update({"request_id": rid, "status": "issued"})
        self.send(200, body)

    def lookup(self, serial):
        s = self.server.state
        serial = serial.upper().lstrip("0") or "0"
        with s.lock:
            rec = s.ca.issued.get(serial)
            if rec is None:
                return self.send(404, error_body("not_found", "Certificate not found", "serial_number"))
            cert = rec["cert"]
            out = {"serial_number": serial, "status": rec["status"], "profile": {"id": rec["profile_id"]},
                   "seat": {"seat_id": rec["seat_id"]},
                   "common_name": cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                   "certificate": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
                   "valid_from": iso(cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)),
                   "valid_to": iso(cert.not_valid_after.replace(tzinfo=datetime.timezone.utc))}
            if rec["revocation"]:
                reason, when = rec["revocation"]
                name = next(k for k, v in REASONS.items() if v == reason)
                out["revocation"] = {"reason": name, "revocation_date": iso(when)}
        self.send(200, out)

    def revoke(self, serial):
        body = self.json_body()
        if body is None:
            return
        s = self.server.state
        reason = body.get("revocation_reason", "unspecified")
        if reason not in REASONS or reason == "remove_from_crl":
            return self.send(400, error_body("invalid_input", "invalid revocation_reason", "revocation_reason"))
        serial = serial.upper().lstrip("0") or "0"
        with s.lock:
            rec = s.ca.issued.get(serial)
            if rec is None:
                return self.send(404, error_body("not_found", "Certificate not found", "serial_number"))
            if rec["status"] == "revoked":
                return self.send(400, error_body("invalid_status", "Certificate is already revoked", "serial_number"))
            rec["status"] = "revoked"
            rec["revocation"] = (REASONS[reason], now())
            s.ca.make_crl()
        self.send(204)

    # ---- test control ----
    def control(self, method, path):
        s = self.server.state
        if method == "POST" and path.startswith("/_standin/approve/"):
            rid = path[len("/_standin/approve/"):]
            with s.lock:
                if rid not in s.requests:
                    return self.send(404, {"error": "no such request"})
                s.requests[rid]["status"] = "approved"
            return self.send(200, {"request_id": rid, "status": "approved"})
        if method == "POST" and path.startswith("/_standin/deny/"):
            rid = path[len("/_standin/deny/"):]
            body = self.json_body()
            if body is None:
                return
            with s.lock:
                if rid not in s.requests:
                    return self.send(404, {"error": "no such request"})
                s.requests[rid]["status"] = "rejected"
                s.requests[rid]["reason"] = str(body.get("reason", "rejected by an administrator"))
            return self.send(200, {"request_id": rid, "status": "rejected"})
        if method == "POST" and path == "/_standin/fault":
            body = self.json_body()
            if body is None:
                return
            with s.lock:
                s.fault = {"mode": str(body.get("mode", "none")), "count": int(body.get("count", -1)),
                           "retry_after": int(body.get("retry_after", 1)), "seconds": float(body.get("seconds", 30))}
            return self.send(200, s.fault)
        if method == "GET" and path == "/_standin/last-request":
            with s.lock:
                return self.send(200, s.last_request if s.last_request is not None else {})
        if method == "GET" and path == "/_standin/stats":
            with s.lock:
                return self.send(200, dict(s.stats))
        if method == "GET" and path == "/_standin/pending":
            with s.lock:
                return self.send(200, [rid for rid, r in s.requests.items() if r["status"] == "pending"])
        self.send(404, {"error": "unknown control endpoint"})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # TLS handshakes refused by clients (bad trust in a test) are expected noise.
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", required=True, help="directory for ca-chain.pem, root.pem and port")
    ap.add_argument("--cert", required=True, help="TLS server certificate (PEM)")
    ap.add_argument("--key", required=True, help="its key (PEM)")
    ap.add_argument("--api-key-file", help="file holding the accepted x-api-key value")
    ap.add_argument("--client-ca", help="PEM bundle: accept client certificates it signed")
    ap.add_argument("--profile", action="append", default=[], help="ID[:instant|manual] (repeatable)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ca-key", choices=["ec", "rsa"], default="ec", help="key type of the stand-in's CAs")
    args = ap.parse_args()
    args.api_key = open(args.api_key_file).read().strip() if args.api_key_file else ""

    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(args.client_ca)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    ca = Ca(args.state, "https://127.0.0.1:%d/crl/issuing.crl" % port, args.ca_key)
    server.state = State(args, ca)
    with open(os.path.join(args.state, "port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(args.state, "port.tmp"), os.path.join(args.state, "port"))
    server.serve_forever()


if __name__ == "__main__":
    main()
