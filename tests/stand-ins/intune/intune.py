#!/usr/bin/python3
"""A stand-in for Microsoft Intune's public connector APIs (and the parts of Entra ID and Microsoft
Graph they need), for tests.

One HTTPS server on loopback plays (see README.md for which behaviours come from Microsoft's
documentation or Microsoft's own client code, and which are guesses):

  POST /{tenant}/oauth2/v2.0/token                 Entra ID v2 token endpoint, client_credentials grant
                                                   with client_secret or a client_assertion (RS256/ES256)
  GET  /v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints
                                                   Graph: Intune's service endpoints (discovery)
  GET  /v1.0/applications/{objectId}               Graph: the connector's application (id, keyCredentials)
  GET  /v1.0/applications(appId='{clientId}')
  POST /v1.0/applications/{objectId}/addKey        Graph: add a certificate credential (proof of possession)
  POST /v1.0/applications/{objectId}/removeKey     Graph: remove one (also under applications(appId='..'))
  POST /ScepRequestValidationFEService/ScepActions/validateRequest|successNotification|failureNotification
  POST /PkiConnectorFEService/CertificateAuthorityRequests/downloadRevocationRequests|uploadRevocationResults

Test-only control API (no authentication; loopback only), under /_control/:
  POST   /_control/challenges        {"challenge", "subject"?, "sans"?, "code"?}
  POST   /_control/revocations       [{"serialNumber", "issuerName", "caConfiguration"}] -> [requestContext...]
  GET    /_control/revocation-results
  GET    /_control/revocations       the queue, with hand-out state
  GET    /_control/validations       every validateRequest answered: transactionId, code
  GET    /_control/notifications     success and failure notifications, in arrival order
  GET    /_control/calls             every API call: method, path, client-request-id, api-version,
                                     UserAgent, authorization kind, status
  GET    /_control/app               the application's key credentials
  POST   /_control/fault             {"match", "mode": "down"|"status", "status", "retry_after", "delay_ms", "count"}
  DELETE /_control/fault
  POST   /_control/expire-tokens     every token issued so far is refused from now on

Only the Python standard library and python3-cryptography are used. Secrets (client secret,
tokens, challenges) are never printed.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import AttributeOID, NameOID

INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"
GRAPH_AUD = "00000002-0000-0000-c000-000000000000"  # addKey/removeKey proof audience
GRAPH_RESOURCE = "https://graph.microsoft.com"
INTUNE_RESOURCE = "https://api.manage.microsoft.com"
SCEP_SERVICE = "ScepRequestValidationFEService"
PKI_SERVICE = "PkiConnectorFEService"
SCEP_API_VERSION = "2018-02-20"
PKI_API_VERSION = "5019-05-05"
MAX_BODY = 1 << 20
MAX_ASSERTION_LIFETIME = 600  # seconds between nbf (or iat) and exp
CLOCK_SKEW = 300
# uploadRevocationResults errorCode values (CARequestErrorCodes in Microsoft's Java and C# clients)
CA_ERROR_CODES = {
    "None": 0, "NonRetryableServiceException": 4000, "DataSerializationError": 4001,
    "ParameterDataInvalidError": 4002, "CryptographyError": 4003, "CertificateNotFoundError": 4004,
    "ConflictError": 4005, "NotSupportedError": 4006, "PayloadTooLargeError": 4007,
    "RetryableServiceException": 4100, "ServiceUnavailableException": 4101, "ServiceTooBusyException": 4102,
    "AuthenticationException": 4103,
}
# validateRequest codes (IntuneScepServiceException.ErrorCode in Microsoft's Java client)
SCEP_CODES = {
    "Success", "CertificateRequestDecodingFailed", "ChallengePasswordMissing", "ChallengeDeserializationError",
    "ChallengeDecryptionError", "ChallengeDecodingError", "ChallengeInvalidTimestamp", "ChallengeExpired",
    "SubjectNameMissing", "SubjectNameMismatch", "SubjectAltNameMissing", "SubjectAltNameMismatch",
    "KeyUsageMismatch", "KeyLengthMismatch", "EnhancedKeyUsageMissing", "EnhancedKeyUsageMismatch",
    "AadKeyIdentifierListMissing", "RegisteredKeyMismatch", "SigningCertThumbprintMismatch",
    "ScepProfileNoLongerTargetedToTheClient", "SignatureValidationFailed", "BadCertificateRequestIdInChallenge",
    "BadDeviceIdInChallenge", "BadUserIdInChallenge", "BadTenantIdInChallenge",
}
SHORT_NAMES = {  # subject attribute names as an administrator writes them
    NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L",
    NameOID.EMAIL_ADDRESS: "EMAILADDRESS", NameOID.SERIAL_NUMBER: "SERIALNUMBER", NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.STREET_ADDRESS: "STREET", NameOID.USER_ID: "UID", NameOID.TITLE: "TITLE",
}
NAME_ALIASES = {"E": "EMAILADDRESS", "EMAIL": "EMAILADDRESS", "S": "ST", "SN": "SERIALNUMBER"}


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class KeyCredential:
    """One certificate credential registered on the application (a Graph keyCredential)."""

    def __init__(self, cert, display_name=None, key_id=None):
        self.cert = cert
        der = cert.public_bytes(serialization.Encoding.DER)
        self.sha1 = hashlib.sha1(der).digest()
        self.sha256 = hashlib.sha256(der).digest()
        self.thumbprint = self.sha1.hex().upper()
        self.key_id = key_id or str(uuid.uuid4())
        self.display_name = display_name or cert.subject.rfc4514_string()
        self.start = cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
        self.end = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)

    def graph(self):
        return {"customKeyIdentifier": self.thumbprint, "displayName": self.display_name,
                "endDateTime": iso(self.end), "key": None, "keyId": self.key_id,
                "startDateTime": iso(self.start), "type": "AsymmetricX509Cert", "usage": "Verify"}

    def control(self):
        return {"keyId": self.key_id, "thumbprint": self.thumbprint, "displayName": self.display_name,
                "startDateTime": iso(self.start), "endDateTime": iso(self.end),
                "x5t": b64url(self.sha1), "x5t#S256": b64url(self.sha256)}


class JwtError(Exception):
    def __init__(self, aadsts, message):
        super().__init__(message)
        self.aadsts = aadsts


def verify_jwt(token, keys):
    """Verifies a compact JWS signed with RS256 or ES256 by one of `keys` (found by the header's
    x5t or x5t#S256). Returns (header, claims, key). Raises JwtError."""
    if not isinstance(token, str) or len(token) > 16384:
        raise JwtError(50027, "JWT token is invalid or malformed.")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError(50027, "JWT token is invalid or malformed.")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise JwtError(50027, "JWT token is invalid or malformed.")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError(50027, "JWT token is invalid or malformed.")
    alg = header.get("alg")
    if alg not in ("RS256", "ES256"):
        raise JwtError(5002738, "Invalid JWT token. '%s' is not a supported signature algorithm." % str(alg)[:20])
    key = None
    for kc in keys:
        if header.get("x5t#S256") == b64url(kc.sha256) or header.get("x5t") == b64url(kc.sha1):
            key = kc
            break
    if key is None:
        shown = header.get("x5t") or header.get("x5t#S256") or ""
        raise JwtError(700027, "The certificate with identifier used to sign the client assertion is not registered "
                               "on application. [Reason - The key was not found., Thumbprint of key used by client: "
                               "'%s']" % str(shown)[:64])
    signing_input = (parts[0] + "." + parts[1]).encode()
    pub = key.cert.public_key()
    try:
        if alg == "RS256":
            if not isinstance(pub, rsa.RSAPublicKey):
                raise InvalidSignature()
            pub.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            if not isinstance(pub, ec.EllipticCurvePublicKey) or len(signature) != 64:
                raise InvalidSignature()
            der = utils.encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            pub.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise JwtError(700027, "Client assertion failed signature validation.")
    return header, claims, key


def check_lifetime(claims):
    """exp in the future, nbf (or iat) not in the future, exp - nbf <= 10 minutes."""
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, (int, float)) or not isinstance(nbf, (int, float)):
        raise JwtError(700024, "Client assertion is not within its valid time range: 'exp' and 'nbf' are required.")
    if exp <= now or nbf > now + CLOCK_SKEW or exp - nbf > MAX_ASSERTION_LIFETIME:
        raise JwtError(700024, "Client assertion is not within its valid time range. Current time: %s, assertion valid "
                               "from %s, expiry time of assertion %s." % (
                                   iso(utcnow()), iso(datetime.datetime.fromtimestamp(nbf, datetime.timezone.utc)),
                                   iso(datetime.datetime.fromtimestamp(exp, datetime.timezone.utc))))


def normalise_name(text):
    """'CN=a,O=b' or '/O=b/CN=a' -> sorted [(TYPE, value)]."""
    text = text.strip()
    if text.startswith("/"):
        items = [p for p in text[1:].split("/") if p]
    else:
        items = [p.strip() for p in re.split(r"(?<!\\),", text) if p.strip()]
    out = []
    for item in items:
        k, _, v = item.partition("=")
        k = k.strip().upper()
        out.append((NAME_ALIASES.get(k, k), v.strip().replace("\\,", ",")))
    return sorted(out)


def csr_name(name):
    return sorted((SHORT_NAMES.get(a.oid, a.oid.dotted_string), str(a.value)) for a in name)


def csr_sans(csr):
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    out = set()
    for gn in ext:
        v = gn.value
        out.add(v if isinstance(v, str) else str(v))
    return out


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.tenant_id = args.tenant_id
        self.client_id = args.client_id
        self.object_id = args.app_object_id or str(uuid.uuid4())
        self.secret = None
        if args.secret_file:
            with open(args.secret_file) as f:
                self.secret = f.readline().rstrip("\r\n")
        self.keys = []
        for path in args.credential_cert:
            with open(path, "rb") as f:
                for pem in re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", f.read(), re.S):
                    self.keys.append(KeyCredential(x509.load_pem_x509_certificate(pem)))
        self.token_lifetime = args.token_lifetime
        self.reoffer = args.reoffer_seconds
        self.tokens = {}  # access token -> {"resource", "exp", "via"}
        self.jtis = {}  # jti -> exp (replay)
        self.challenges = {}  # challenge -> {"subject", "sans", "code"}
        self.revocations = []  # queue entries
        self.results = []  # uploaded results, in order
        self.notifications = []
        self.validations = []  # {"transactionId", "code"} for every validateRequest answered
        self.calls = []
        self.faults = []
        self.base = None  # https://127.0.0.1:PORT

    def service_uri(self, name):
        return "%s/%s" % (self.base, name)


def aad_error(error, code, description, status):
    now = utcnow()
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": "AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (
            code, description, trace, corr, now.strftime("%Y-%m-%d %H:%M:%SZ")),
        "error_codes": [code], "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"), "trace_id": trace,
        "correlation_id": corr, "error_uri": "https://login.microsoftonline.com/error?code=%d" % code,
    }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "IntuneStandIn/1.0"

    def log_message(self, fmt, *args):  # paths only: never a body, a token or a secret
        sys.stderr.write("intune stand-in: " + (fmt % args) + "\n")

    # ---- plumbing ----
    def send(self, status, body=None, headers=None):
        data = b""
        if body is not None:
            data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (
                body.encode() if isinstance(body, str) else body)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
        else:
            self.send_header("Content-Length", "0")
        self.end_headers()
        if status != 204:
            self.wfile.write(data)
        self.status_sent = status

    def read_body(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(n) if n else b""

    def record(self, kind, auth_kind):
        s = self.server.state
        with s.lock:
            s.calls.append({"method": self.command, "path": self.path.split("?", 1)[0], "kind": kind,
                            "client-request-id": self.headers.get("client-request-id"),
                            "api-version": self.headers.get("api-version"),
                            "UserAgent": self.headers.get("UserAgent"),
                            "authorization": auth_kind, "status": self.status_sent,
                            "time": time.time()})

    def fault_for(self, path, service):
        """The first matching fault, with its count consumed, or None."""
        s = self.server.state
        with s.lock:
            for f in s.faults:
                m = f["match"]
                if (path.startswith(m) or m == service) and (f["count"] is None or f["count"] > 0):
                    if f["count"] is not None:
                        f["count"] -= 1
                    return dict(f)
        return None

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def do_PATCH(self):
        self.route("PATCH")

    def route(self, method):
        self.status_sent = 0
        raw_path = self.path
        path = urllib.parse.unquote(raw_path.split("?", 1)[0])
        try:
            if path.startswith("/_control/"):
                return self.control(method, path)
            body = self.read_body()
            if body is None:
                return self.send(413, {"error": {"code": "RequestEntityTooLarge", "message": "body too large"}})
            service, kind = self.classify(method, path)
            f = self.fault_for(path, service)
            if f is not None:
                if f.get("delay_ms"):
                    time.sleep(f["delay_ms"] / 1000.0)
                if f["mode"] == "down":
                    # The service is unreachable: the connection is dropped without an answer.
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    self.status_sent = -1
                    return self.record(kind, "fault:down")
                if f["mode"] == "status":
                    st = int(f.get("status") or 503)
                    hdr = {"Retry-After": str(f["retry_after"])} if f.get("retry_after") is not None else {}
                    self.send(st, {"error": {"code": "ServiceUnavailable" if st == 503 else "TooManyRequests" if st == 429
                                             else "InternalServerError", "message": "fault injected by the test"}}, hdr)
                    return self.record(kind, "fault:status")
            if kind == "token":
                return self.token(path, body)
            handler = {
                "endpoints": self.graph_endpoints, "application": self.graph_application, "addKey": self.graph_add_key,
                "removeKey": self.graph_remove_key, "validateRequest": self.scep_validate,
                "successNotification": self.scep_success, "failureNotification": self.scep_failure,
                "downloadRevocationRequests": self.revocation_download,
                "uploadRevocationResults": self.revocation_upload,
            }.get(kind)
            if handler is None:
                self.send(404, {"error": {"code": "ResourceNotFound", "message": "no such endpoint: %s %s" % (
                    method, path[:200])}})
                return self.record("unknown", "-")
            resource = GRAPH_RESOURCE if service == "graph" else INTUNE_RESOURCE
            auth = self.bearer(resource, graph=(service == "graph"))
            if auth is None:
                return self.record(kind, "bearer:refused")
            if service != "graph":
                want = SCEP_API_VERSION if service == SCEP_SERVICE else PKI_API_VERSION
                if not self.headers.get("client-request-id"):
                    self.send(400, {"code": "BadRequest", "errorDescription": "the client-request-id header is required"})
                    return self.record(kind, auth)
                if self.headers.get("api-version") != want:
                    self.send(400, {"code": "BadRequest", "errorDescription": "the api-version header must be %s" % want})
                    return self.record(kind, auth)
            if method != ("GET" if kind in ("endpoints", "application") else "POST"):
                self.send(405, {"error": {"code": "Request_BadRequest", "message": "method not allowed"}})
                return self.record(kind, auth)
            handler(path, body, auth)
            self.record(kind, auth)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def classify(method, path):
        if re.fullmatch(r"/[^/]+/oauth2/v2\.0/token", path):
            return "login", "token"
        if path == "/v1.0/servicePrincipals/appId=%s/endpoints" % INTUNE_APP_ID:
            return "graph", "endpoints"
        m = re.fullmatch(r"/v1\.0/applications(/[^/]+|\(appId='[^']+'\))(/addKey|/removeKey)?", path)
        if m:
            return "graph", (m.group(2) or "/application")[1:]
        m = re.fullmatch(r"/%s/ScepActions/(validateRequest|successNotification|failureNotification)" % SCEP_SERVICE, path)
        if m:
            return SCEP_SERVICE, m.group(1)
        m = re.fullmatch(r"/%s/CertificateAuthorityRequests/(downloadRevocationRequests|uploadRevocationResults)"
                         % PKI_SERVICE, path)
        if m:
            return PKI_SERVICE, m.group(1)
        return "unknown", "unknown"

    # ---- Entra ID ----
    def token(self, path, body):
        self.token_via = "-"
        status, answer = self.issue_token(path.split("/")[1], body)
        self.send(status, answer)
        self.record("token", self.token_via if status == 200 else "refused:" + answer.get("error", ""))

    def issue_token(self, tenant, body):
        s = self.server.state
        if tenant != s.tenant_id:
            return aad_error("invalid_request", 90002, "Tenant '%s' not found. Check to make sure you have the correct "
                             "tenant ID and are signing into the correct cloud." % tenant[:100], 400)
        if "application/x-www-form-urlencoded" not in (self.headers.get("Content-Type") or ""):
            return aad_error("invalid_request", 900144, "The request body must contain the following parameter: "
                             "'grant_type'.", 400)
        try:
            form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return aad_error("invalid_request", 900144, "The request body is not form-urlencoded.", 400)
        one = lambda k: (form.get(k) or [None])[0]
        for param in ("grant_type", "client_id", "scope"):
            if not one(param):
                return aad_error("invalid_request", 900144, "The request body must contain the following parameter: "
                                 "'%s'." % param, 400)
        if one("grant_type") != "client_credentials":
            return aad_error("unsupported_grant_type", 70003, "The app requested an unsupported grant type '%s'."
                             % one("grant_type")[:40], 400)
        if one("client_id") != s.client_id:
            return aad_error("unauthorized_client", 700016, "Application with identifier '%s' was not found in the "
                             "directory '%s'." % (one("client_id")[:64], s.tenant_id), 400)
        scope = one("scope").strip()
        resource = self.resource_of(scope)
        if resource is None:
            return aad_error("invalid_scope", 1002012, "The provided value for scope %s is not valid. Client credential "
                             "flows must have a scope value with /.default suffixed to the resource identifier "
                             "(application ID URI)." % scope[:100], 400)
        secret, assertion = one("client_secret"), one("client_assertion")
        if secret is not None and assertion is not None:
            return aad_error("invalid_request", 90014, "Only one client credential may be sent: client_secret or "
                             "client_assertion.", 400)
        if secret is not None:
            if not s.secret or not secrets.compare_digest(secret.encode(), s.secret.encode()):
                return aad_error("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being "
                                 "sent in the request is the client secret value, not the client secret ID, for a "
                                 "secret added to app '%s'." % s.client_id, 401)
            via = "secret"
        elif assertion is not None:
            if one("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                return aad_error("invalid_request", 700019, "The client_assertion_type must be "
                                 "urn:ietf:params:oauth:client-assertion-type:jwt-bearer.", 400)
            try:
                with s.lock:
                    keys = list(s.keys)
                _, claims, key = verify_jwt(assertion, keys)
                endpoint = "https://%s%s" % (self.headers.get("Host") or "", self.path.split("?", 1)[0])
                if claims.get("aud") != endpoint:
                    raise JwtError(700212, "The audience claim of the client assertion '%s' does not match the token "
                                           "endpoint '%s'." % (str(claims.get("aud"))[:200], endpoint))
                if claims.get("iss") != s.client_id or claims.get("sub") != s.client_id:
                    raise JwtError(700021, "Client assertion application identifier doesn't match 'client_id' "
                                           "parameter: 'iss' and 'sub' must be the client id.")
                check_lifetime(claims)
                jti = claims.get("jti")
                if not isinstance(jti, str) or not jti:
                    raise JwtError(700023, "Client assertion contains no 'jti' claim.")
                with s.lock:
                    now = time.time()
                    for j in [j for j, e in s.jtis.items() if e < now - CLOCK_SKEW]:
                        del s.jtis[j]
                    if jti in s.jtis:
                        raise JwtError(700229, "Client assertion 'jti' was already used: replayed assertions are "
                                               "refused.")
                    s.jtis[jti] = claims["exp"]
            except JwtError as e:
                return aad_error("invalid_client", e.aadsts, str(e), 401)
            via = "certificate:" + key.thumbprint
        else:
            return aad_error("invalid_client", 7000218, "The request body must contain the following parameter: "
                             "'client_assertion' or 'client_secret'.", 401)
        token = secrets.token_urlsafe(48)
        with s.lock:
            s.tokens[token] = {"resource": resource, "exp": time.time() + s.token_lifetime, "via": via}
        self.token_via = via
        return 200, {"token_type": "Bearer", "expires_in": s.token_lifetime, "ext_expires_in": s.token_lifetime,
                     "access_token": token}

    def resource_of(self, scope):
        """The resource a `/.default` scope names: Graph (graph.microsoft.com, or this server's own
        URL, which tests configure as graph_url) or Intune (api.manage.microsoft.com)."""
        if " " in scope or not scope.endswith("/.default"):
            return None
        res = scope[: -len("/.default")].rstrip("/").lower()
        own = "https://%s" % (self.headers.get("Host") or "").lower()
        if res in (GRAPH_RESOURCE, own, self.server.state.base.lower()):
            return GRAPH_RESOURCE
        if res == INTUNE_RESOURCE:
            return INTUNE_RESOURCE
        return None

    def bearer(self, resource, graph):
        """The authorization kind ("bearer:secret" / "bearer:certificate:<thumbprint>") of a valid
        token for `resource`, or None after answering 401."""
        s = self.server.state
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with s.lock:
            rec = s.tokens.get(token)
        problem = None
        if rec is None:
            problem = "the access token is missing or was not issued by this service"
        elif rec["exp"] <= time.time():
            problem = "the access token has expired"
        elif rec["resource"] != resource:
            problem = "the access token's audience is %s, this service is %s" % (rec["resource"], resource)
        if problem is None:
            return "bearer:" + rec["via"]
        hdr = {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="%s"' % problem}
        if graph:
            self.send(401, self.graph_error("InvalidAuthenticationToken", "Access token validation failure: " + problem),
                      hdr)
        else:
            self.send(401, {"code": "Unauthorized", "errorDescription": problem}, hdr)
        return None

    def graph_error(self, code, message):
        return {"error": {"code": code, "message": message, "innerError": {
            "date": iso(utcnow()), "request-id": str(uuid.uuid4()),
            "client-request-id": self.headers.get("client-request-id") or str(uuid.uuid4())}}}

    def json_body(self, body, graph=False):
        try:
            v = json.loads(body or b"null")
        except ValueError:
            v = None
        if not isinstance(v, dict):
            if graph:
                self.send(400, self.graph_error("BadRequest", "The request body must be a JSON object."))
            else:
                self.send(400, {"code": "BadRequest", "errorDescription": "the request body must be a JSON object"})
            return None
        return v

    # ---- Graph ----
    def graph_endpoints(self, path, body, auth):
        s = self.server.state
        sp = "%s-sp" % INTUNE_APP_ID
        names = [  # the two the connector uses, and others the real service principal lists (guessed set)
            SCEP_SERVICE, PKI_SERVICE, "StatelessDeviceCheckinFEService", "StatelessApplicationManagementService",
            "SccmStatusFEService",
        ]
        value = []
        for i, name in enumerate(names):
            value.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "deletedDateTime": None,
                          "capability": name, "providerId": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                          "providerName": name, "providerResourceId": None, "uri": s.service_uri(name)})
        self.send(200, {"@odata.context": "%s/v1.0/$metadata#servicePrincipals('%s')/endpoints" % (
            GRAPH_RESOURCE, sp), "value": value})

    def application_or_404(self, path):
        s = self.server.state
        m = re.fullmatch(r"/v1\.0/applications(?:/([^/(]+)|\(appId='([^']+)'\))(?:/\w+)?", path)
        if m and (m.group(1) == s.object_id or m.group(2) == s.client_id):
            return True
        self.send(404, self.graph_error("Request_ResourceNotFound", "Resource '%s' does not exist or one of its "
                                        "queried reference-property objects are not present." % (
                                            (m.group(1) or m.group(2)) if m else "")[:100]))
        return False

    def graph_application(self, path, body, auth):
        s = self.server.state
        if not self.application_or_404(path):
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        select = [f.strip() for f in (query.get("$select") or ["id,appId,displayName,keyCredentials"])[0].split(",")]
        with s.lock:
            full = {"id": s.object_id, "appId": s.client_id, "displayName": "certconnector (stand-in)",
                    "keyCredentials": [k.graph() for k in s.keys], "passwordCredentials": []}
        out = {"@odata.context": "%s/v1.0/$metadata#applications(%s)/$entity" % (GRAPH_RESOURCE, ",".join(select))}
        for f in select:
            if f in full:
                out[f] = full[f]
        self.send(200, out)

    def verify_proof(self, proof):
        """addKey/removeKey proof of possession: signed by a currently registered key, aud = AAD
        Graph's app id, iss = the application's object id, lifetime <= 10 minutes."""
        s = self.server.state
        with s.lock:
            keys = [k for k in s.keys if k.end > utcnow()]
        try:
            _, claims, key = verify_jwt(proof, keys)
            if claims.get("aud") != GRAPH_AUD:
                raise JwtError(0, "the proof's aud must be %s" % GRAPH_AUD)
            if claims.get("iss") != s.object_id:
                raise JwtError(0, "the proof's iss must be the application's object id")
            check_lifetime(claims)
        except JwtError as e:
            return None, str(e)
        return key, None

    def refuse_proof(self, problem):
        """addKey/removeKey with a proof Graph does not accept: 401 for a bad signature or an
        unregistered key, else 400."""
        return self.send(401 if "signature" in problem or "not registered" in problem else 400, self.graph_error(
            "Authentication_Unauthorized" if "signature" in problem else "Request_BadRequest",
            "Proof of possession validation failed: " + problem))

    def graph_add_key(self, path, body, auth):
        s = self.server.state
        if not self.application_or_404(path):
            return
        req = self.json_body(body, graph=True)
        if req is None:
            return
        kc, proof = req.get("keyCredential"), req.get("proof")
        if not isinstance(kc, dict) or not isinstance(proof, str):
            return self.send(400, self.graph_error("Request_BadRequest", "keyCredential and proof are required."))
        signer, problem = self.verify_proof(proof)
        if signer is None:
            return self.refuse_proof(problem)
        if kc.get("type") != "AsymmetricX509Cert" or kc.get("usage") != "Verify":
            return self.send(400, self.graph_error("Request_BadRequest", "keyCredential type must be "
                                                   "AsymmetricX509Cert and usage Verify."))
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(kc.get("key") or "", validate=True))
        except (ValueError, binascii.Error):
            return self.send(400, self.graph_error("Request_BadRequest", "keyCredential.key is not a base64 DER "
                                                   "X.509 certificate."))
        new = KeyCredential(cert, display_name=kc.get("displayName"))
        with s.lock:
            if any(k.thumbprint == new.thumbprint for k in s.keys):
                return self.send(400, self.graph_error("Request_BadRequest", "Key credential with the same thumbprint "
                                                       "already exists."))
            s.keys.append(new)
        self.send(200, dict(new.graph(), **{"@odata.context": "%s/v1.0/$metadata#microsoft.graph.keyCredential" %
                                            GRAPH_RESOURCE}))

    def graph_remove_key(self, path, body, auth):
        s = self.server.state
        if not self.application_or_404(path):
            return
        req = self.json_body(body, graph=True)
        if req is None:
            return
        key_id, proof = req.get("keyId"), req.get("proof")
        if not isinstance(key_id, str) or not isinstance(proof, str):
            return self.send(400, self.graph_error("Request_BadRequest", "keyId and proof are required."))
        signer, problem = self.verify_proof(proof)
        if signer is None:
            return self.refuse_proof(problem)
        with s.lock:
            found = [k for k in s.keys if k.key_id == key_id]
            if not found:
                return self.send(404, self.graph_error("Request_ResourceNotFound", "No key credential with keyId '%s'."
                                                       % key_id[:64]))
            s.keys = [k for k in s.keys if k.key_id != key_id]
        self.send(204)

    # ---- Intune SCEP validation ----
    def scep_validate(self, path, body, auth):
        s = self.server.state
        answer = self.validate_answer(body)
        if answer is None:
            return
        with s.lock:
            s.validations.append({"transactionId": self.validating, "code": answer["code"], "time": time.time()})
        self.send(200, answer)

    def validate_answer(self, body):
        """validateRequest's answer for `body`, or None after answering 400."""
        s = self.server.state
        self.validating = None
        req = self.json_body(body)
        if req is None:
            return None
        r = req.get("request")
        if not isinstance(r, dict) or not isinstance(r.get("transactionId"), str) or not r.get("transactionId") \
                or not isinstance(r.get("certificateRequest"), str):
            self.send(400, {"code": "BadRequest", "errorDescription": "request.transactionId and "
                            "request.certificateRequest are required"})
            return None
        self.validating = r["transactionId"]
        try:
            csr = x509.load_der_x509_csr(base64.b64decode(r["certificateRequest"], validate=True))
            if not csr.is_signature_valid:
                raise ValueError("signature")
        except (ValueError, binascii.Error):
            return {"code": "CertificateRequestDecodingFailed",
                    "errorDescription": "the certificate request is not a base64 DER PKCS#10 request"}
        try:
            challenge = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
            challenge = challenge.decode("utf-8", "replace") if isinstance(challenge, bytes) else str(challenge)
        except x509.AttributeNotFound:
            challenge = None
        if not challenge:
            return {"code": "ChallengePasswordMissing",
                    "errorDescription": "the request carries no challengePassword attribute"}
        with s.lock:
            reg = s.challenges.get(challenge)
        if reg is None:
            return {"code": "ChallengeDecryptionError",
                    "errorDescription": "the challenge could not be decrypted"}
        if reg.get("code") and reg["code"] != "Success":
            return {"code": reg["code"], "errorDescription": "refused by the test: %s" % reg["code"]}
        if reg.get("subject") is not None and normalise_name(reg["subject"]) != csr_name(csr.subject):
            return {"code": "SubjectNameMismatch", "errorDescription": "the subject of the request "
                    "does not match the one the profile expects"}
        if reg.get("sans") is not None:
            want = {v.split(":", 1)[1] if re.match(r"^(DNS|email|URI|IP|UPN):", v) else v for v in reg["sans"]}
            if want != csr_sans(csr):
                return {"code": "SubjectAltNameMismatch", "errorDescription": "the subject "
                    "alternative names of the request do not match the profile's"}
        return {"code": "Success", "errorDescription": None}

    def notification(self, kind, body, required):
        s = self.server.state
        req = self.json_body(body)
        if req is None:
            return
        n = req.get("notification")
        if not isinstance(n, dict):
            return self.send(400, {"code": "BadRequest", "errorDescription": "notification is required"})
        missing = [k for k in required if n.get(k) in (None, "")]
        if missing:
            return self.send(400, {"code": "BadRequest", "errorDescription": "missing: " + ", ".join(missing)})
        if kind == "failure" and not isinstance(n.get("hResult"), int):
            return self.send(400, {"code": "BadRequest", "errorDescription": "hResult must be an integer"})
        with s.lock:
            s.notifications.append({"kind": kind, "notification": n, "time": time.time(),
                                    "client-request-id": self.headers.get("client-request-id")})
        self.send(200, {"code": "Success", "errorDescription": None})

    def scep_success(self, path, body, auth):
        self.notification("success", body, ["transactionId", "certificateRequest", "certificateThumbprint",
                                            "certificateSerialNumber", "certificateExpirationDateUtc",
                                            "issuingCertificateAuthority"])

    def scep_failure(self, path, body, auth):
        self.notification("failure", body, ["transactionId", "certificateRequest", "errorDescription"])

    # ---- Intune revocation ----
    def revocation_download(self, path, body, auth):
        s = self.server.state
        req = self.json_body(body)
        if req is None:
            return
        p = req.get("downloadParameters")
        if not isinstance(p, dict):
            return self.send(400, {"code": "BadRequest", "errorDescription": "downloadParameters is required"})
        n, issuer = p.get("maxRequests"), p.get("issuerName")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 500:
            return self.send(400, {"code": "BadRequest", "errorDescription": "maxRequests must be 1..500"})
        if issuer is not None and not isinstance(issuer, str):
            return self.send(400, {"code": "BadRequest", "errorDescription": "issuerName must be a string or null"})
        now = time.time()
        with s.lock:
            due = [r for r in s.revocations if r["result"] is None and
                   (r["handed_out"] is None or now - r["handed_out"] >= s.reoffer)]
            # As the live service does (microsoft/Intune-Resource-Access issue #133): truncate to
            # maxRequests first, then filter, and issuerName is compared with caConfiguration.
            batch = due[:n]
            if issuer:
                batch = [r for r in batch if r["caConfiguration"] == issuer]
            for r in batch:
                r["handed_out"] = now
                r["times_handed_out"] += 1
            value = [{"requestContext": r["requestContext"], "serialNumber": r["serialNumber"],
                      "issuerName": r["issuerName"], "caConfiguration": r["caConfiguration"]} for r in batch]
        self.send(200, {"@odata.context": "%s/$metadata#Collection(microsoft.management.services.api."
                        "caRevocationRequest)" % s.service_uri(PKI_SERVICE), "value": value})

    def revocation_upload(self, path, body, auth):
        s = self.server.state
        req = self.json_body(body)
        if req is None:
            return
        results = req.get("results")
        if not isinstance(results, list) or not results:
            return self.send(400, {"code": "BadRequest", "errorDescription": "results must be a non-empty array"})
        parsed = []
        for i, r in enumerate(results):
            if not isinstance(r, dict) or not isinstance(r.get("requestContext"), str) or \
                    not isinstance(r.get("succeeded"), bool):
                return self.send(400, {"code": "BadRequest", "errorDescription":
                                       "results[%d]: requestContext (string) and succeeded (bool) are required" % i})
            code = r.get("errorCode")
            if isinstance(code, bool):
                code = None
            elif isinstance(code, str):
                code = int(code) if re.fullmatch(r"\d{1,5}", code) else CA_ERROR_CODES.get(code)
            if not isinstance(code, int) or code not in CA_ERROR_CODES.values():
                return self.send(400, {"code": "BadRequest", "errorDescription": "results[%d].errorCode is not a "
                                       "CARequestErrorCode" % i})
            if r["succeeded"] != (code == 0):
                return self.send(400, {"code": "BadRequest", "errorDescription": "results[%d]: errorCode must be 0 "
                                       "(None) exactly when succeeded is true" % i})
            msg = r.get("errorMessage")
            if msg is not None and (not isinstance(msg, str) or len(msg) > 255):
                return self.send(400, {"code": "BadRequest", "errorDescription": "results[%d].errorMessage must be "
                                       "a string of at most 255 characters" % i})
            parsed.append({"requestContext": r["requestContext"], "succeeded": r["succeeded"], "errorCode": code,
                           "errorCodeAsSent": r.get("errorCode"), "errorMessage": msg})
        with s.lock:
            by_ctx = {q["requestContext"]: q for q in s.revocations}
            for p in parsed:
                q = by_ctx.get(p["requestContext"])
                p["known"] = q is not None
                if q is not None:
                    p["serialNumber"] = q["serialNumber"]
                    if q["result"] is None:
                        q["result"] = p
                p["time"] = time.time()
                s.results.append(p)
        self.send(200, {"@odata.context": "%s/$metadata#Edm.Boolean" % s.service_uri(PKI_SERVICE), "value": True})

    # ---- test control ----
    def control(self, method, path):
        s = self.server.state
        body = self.read_body() if method in ("POST", "PUT") else b""
        if body is None:
            return self.send(413, {"error": "body too large"})
        try:
            req = json.loads(body) if body else None
        except ValueError:
            return self.send(400, {"error": "the body is not JSON"})
        if method == "POST" and path == "/_control/challenges":
            if not isinstance(req, dict) or not isinstance(req.get("challenge"), str) or not req["challenge"]:
                return self.send(400, {"error": "expected {\"challenge\": string, \"subject\"?, \"sans\"?, \"code\"?}"})
            if req.get("code") is not None and req["code"] not in SCEP_CODES:
                return self.send(400, {"error": "unknown code; one of " + ", ".join(sorted(SCEP_CODES))})
            with s.lock:
                s.challenges[req["challenge"]] = {"subject": req.get("subject"), "sans": req.get("sans"),
                                                  "code": req.get("code")}
            return self.send(200, {"registered": True})
        if method == "POST" and path == "/_control/revocations":
            if not isinstance(req, list) or not all(isinstance(r, dict) for r in req):
                return self.send(400, {"error": "expected [{serialNumber, issuerName, caConfiguration}]"})
            out = []
            with s.lock:
                for r in req:
                    ctx = r.get("requestContext") or str(uuid.uuid4())
                    s.revocations.append({"requestContext": ctx, "serialNumber": r.get("serialNumber"),
                                          "issuerName": r.get("issuerName"), "caConfiguration": r.get("caConfiguration"),
                                          "handed_out": None, "times_handed_out": 0, "result": None})
                    out.append(ctx)
            return self.send(200, out)
        if method == "GET" and path == "/_control/revocations":
            with s.lock:
                return self.send(200, [{k: v for k, v in r.items()} for r in s.revocations])
        if method == "GET" and path == "/_control/revocation-results":
            with s.lock:
                return self.send(200, list(s.results))
        if method == "GET" and path == "/_control/validations":
            with s.lock:
                return self.send(200, list(s.validations))
        if method == "GET" and path == "/_control/notifications":
            with s.lock:
                return self.send(200, list(s.notifications))
        if method == "GET" and path == "/_control/calls":
            with s.lock:
                return self.send(200, list(s.calls))
        if method == "GET" and path == "/_control/app":
            with s.lock:
                return self.send(200, {"id": s.object_id, "appId": s.client_id,
                                       "keyCredentials": [k.control() for k in s.keys]})
        if method == "POST" and path == "/_control/fault":
            if not isinstance(req, dict) or not isinstance(req.get("match"), str) or \
                    req.get("mode") not in ("down", "status"):
                return self.send(400, {"error": "expected {match, mode: down|status, status?, retry_after?, "
                                       "delay_ms?, count?}"})
            f = {"match": req["match"], "mode": req["mode"], "status": int(req.get("status") or 503),
                 "retry_after": req.get("retry_after"), "delay_ms": int(req.get("delay_ms") or 0),
                 "count": None if req.get("count") is None else int(req["count"])}
            with s.lock:
                s.faults.append(f)
            return self.send(200, f)
        if method == "DELETE" and path == "/_control/fault":
            with s.lock:
                s.faults = []
            return self.send(200, {"faults": 0})
        if method == "POST" and path == "/_control/expire-tokens":
            with s.lock:
                n = len(s.tokens)
                for t in s.tokens.values():
                    t["exp"] = 0
            return self.send(200, {"expired": n})
        self.send(404, {"error": "unknown control endpoint"})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # TLS handshakes refused by clients, connections dropped by fault mode "down": expected noise.
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="written (atomically) with the bound port once listening")
    ap.add_argument("--cert", required=True, help="TLS server certificate (PEM)")
    ap.add_argument("--key", required=True, help="its key (PEM)")
    ap.add_argument("--tenant-id", required=True, help="the directory id or domain in the token endpoint's path")
    ap.add_argument("--client-id", required=True, help="the application (client) id of the connector's app")
    ap.add_argument("--app-object-id", help="the application's object id (default: a new GUID)")
    ap.add_argument("--secret-file", help="first line: the application's client secret")
    ap.add_argument("--credential-cert", action="append", default=[],
                    help="PEM certificate(s) registered as the application's key credentials (repeatable)")
    ap.add_argument("--token-lifetime", type=int, default=3599, help="access token lifetime in seconds")
    ap.add_argument("--reoffer-seconds", type=float, default=600,
                    help="hand a downloaded revocation request out again when no result arrived within this time")
    args = ap.parse_args()

    state = State(args)
    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    state.base = "https://127.0.0.1:%d" % port
    server.state = state
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.rename(args.port_file + ".tmp", args.port_file)
    sys.stderr.write("intune stand-in: listening on %s (tenant %s, app %s, object %s, %d key credential(s)%s)\n" % (
        state.base, state.tenant_id, state.client_id, state.object_id, len(state.keys),
        ", a client secret" if state.secret else ""))
    server.serve_forever()


if __name__ == "__main__":
    main()
