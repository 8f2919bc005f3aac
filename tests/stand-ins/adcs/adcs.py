#!/usr/bin/python3
"""Stand-in for Microsoft AD CS, for certconnector's ca-adcs tests (see README.md).

One HTTPS server on 127.0.0.1 serves:
  /certsrv/...                Web Enrollment (certfnsh.asp, certnew.cer, certnew.p7b, certcarc.asp,
                              certcrl.crl) behind Basic and NTLM (NTLMv2 verified) authentication
  /<CA>_CES_UsernamePassword/service.svc/CES
                              MS-WSTEP (CES): RequestSecurityToken Issue and QueryTokenStatus,
                              WS-Security UsernameToken checked
  /wsman                      WinRM (MS-WSMV remote shell) running `certutil -config .. -revoke ..`
                              for the revocation account (Basic or NTLM)
  /CertEnroll/<CA>.crl|.crt   the CDP and AIA (anonymous, as IIS serves CertEnroll)
  /_control/...               test control only (approve/deny pending requests, failure modes)
Issues from an OpenSSL-backed CA (python3-cryptography) made at start: a root and an issuing CA.
Only the Python standard library and python3-cryptography are used.
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree as ET

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_BODY = 1 << 20

# ---------------------------------------------------------------------------------------------
# MD4 (RFC 1320), for the NT hash: OpenSSL 3 moved MD4 to the legacy provider, so hashlib may
# not have it.
M32 = 0xFFFFFFFF


def _rotl(v, s):
    v &= M32
    return ((v << s) | (v >> (32 - s))) & M32


def md4(data: bytes) -> bytes:
    f = lambda x, y, z: (x & y) | (~x & z)
    g = lambda x, y, z: (x & y) | (x & z) | (y & z)
    h = lambda x, y, z: x ^ y ^ z
    rounds = (
        (f, list(range(16)), (3, 7, 11, 19), 0),
        (g, [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15], (3, 5, 9, 13), 0x5A827999),
        (h, [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15], (3, 9, 11, 15), 0x6ED9EBA1),
    )
    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", (len(data) * 8) & 0xFFFFFFFFFFFFFFFF)
    state = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        a, b, c, d = state
        for fn, order, shifts, const in rounds:
            for i, k in enumerate(order):
                t = _rotl(a + fn(b, c, d) + x[k] + const, shifts[i % 4])
                a, b, c, d = d, t, b, c
        state = [(s + v) & M32 for s, v in zip(state, (a, b, c, d))]
    return struct.pack("<4I", *state)


assert md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
assert md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"

# ---------------------------------------------------------------------------------------------
# NTLM (MS-NLMP): the server side of the three-message handshake, NTLMv2 only.
NTLM_SIG = b"NTLMSSP\x00"


def _secbuf(msg, off):
    length, _, where = struct.unpack_from("<HHI", msg, off)
    if where + length > len(msg):
        raise ValueError("security buffer outside the message")
    return msg[where:where + length]


def ntlm_challenge(domain: str, challenge: bytes) -> bytes:
    dom = domain.encode("utf-16-le")
    host = "STANDIN-CA".encode("utf-16-le")
    filetime = struct.pack("<Q", int((time.time() + 11644473600) * 10_000_000))
    info = b"".join(struct.pack("<HH", t, len(v)) + v for t, v in ((2, dom), (1, host), (7, filetime), (0, b"")))
    flags = 0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00010000 | 0x00080000 | 0x00800000 | 0x20000000 | 0x80000000
    head = 56
    msg = NTLM_SIG + struct.pack("<I", 2)
    msg += struct.pack("<HHI", len(dom), len(dom), head)
    msg += struct.pack("<I", flags) + challenge + b"\x00" * 8
    msg += struct.pack("<HHI", len(info), len(info), head + len(dom))
    msg += b"\x0a\x00\x63\x45\x00\x00\x00\x0f"  # version: 10.0.17763, NTLM revision 15
    return msg + dom + info


def ntlm_verify(type3: bytes, challenge: bytes, accounts) -> str:
    """Returns 'DOMAIN\\user' when the NTLMv2 response proves the password; raises otherwise."""
    if type3[:8] != NTLM_SIG or struct.unpack_from("<I", type3, 8)[0] != 3:
        raise ValueError("not an NTLM AUTHENTICATE message")
    nt = _secbuf(type3, 20)
    flags = struct.unpack_from("<I", type3, 60)[0]
    enc = "utf-16-le" if flags & 1 else "latin-1"
    domain = _secbuf(type3, 28).decode(enc)
    user = _secbuf(type3, 36).decode(enc)
    if len(nt) <= 24:
        raise ValueError("NTLMv1 refused (LmCompatibilityLevel 5)")
    for acct_domain, acct_user, password in accounts:
        if user.lower() != acct_user.lower() or domain.lower() != acct_domain.lower():
            continue
        nthash = md4(password.encode("utf-16-le"))
        ntowf2 = hmac.new(nthash, (user.upper() + domain).encode("utf-16-le"), hashlib.md5).digest()
        proof = hmac.new(ntowf2, challenge + nt[16:], hashlib.md5).digest()
        if hmac.compare_digest(proof, nt[:16]):
            return f"{acct_domain}\\{acct_user}"
    raise PermissionError(f"logon failure for {domain}\\{user}")


def split_account(name: str):
    if "\\" in name:
        d, u = name.split("\\", 1)
        return d, u
    return "", name


# ---------------------------------------------------------------------------------------------
# The CA
REASONS = {0: x509.ReasonFlags.unspecified, 1: x509.ReasonFlags.key_compromise, 2: x509.ReasonFlags.ca_compromise,
           3: x509.ReasonFlags.affiliation_changed, 4: x509.ReasonFlags.superseded,
           5: x509.ReasonFlags.cessation_of_operation, 6: x509.ReasonFlags.certificate_hold}
REASON_TEXT = {0: "Unspecified", 1: "Key Compromise", 2: "CA Compromise", 3: "Affiliation Changed", 4: "Superseded",
               5: "Cessation of Operation", 6: "Certificate Hold"}


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class CA:
    def __init__(self, name, base_url, templates, editf_san):
        self.name = name
        self.file_name = re.sub(r"[^A-Za-z0-9-]", "-", name)
        self.base_url = base_url
        self.templates = templates  # name -> "issue" | "pending" | "denied"
        self.editf_san = editf_san
        self.lock = threading.Lock()
        self.requests = {}  # id -> dict
        self.next_id = 10  # AD CS numbers requests from 1; a fresh CA has had a few already
        self.crl_number = 1
        self.root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        root_name = x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "test"),
                               x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "corp"),
                               x509.NameAttribute(NameOID.COMMON_NAME, "Stand-in Root CA")])
        self.subject = x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "test"),
                                  x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "corp"),
                                  x509.NameAttribute(NameOID.COMMON_NAME, name)])
        t = now()
        self.root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(t - datetime.timedelta(days=1)).not_valid_after(t + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()), critical=False)
                     .sign(self.root_key, hashes.SHA256()))
        self.cert = (x509.CertificateBuilder().subject_name(self.subject).issuer_name(root_name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(t - datetime.timedelta(days=1)).not_valid_after(t + datetime.timedelta(days=1825))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()), critical=False)
                     .sign(self.root_key, hashes.SHA256()))

    @property
    def crl_url(self):
        return f"{self.base_url}/CertEnroll/{self.file_name}.crl"

    def new_request(self, csr_der, template, attributes):
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            self.requests[rid] = {"id": rid, "csr": csr_der, "template": template, "attributes": attributes,
                                  "status": "pending", "message": "Taken Under Submission", "cert": None,
                                  "revoked": None}
            return self.requests[rid]

    def serial_for(self, rid):
        # 19 bytes like AD CS: the request id (4 bytes, little endian) and 15 random bytes.
        return int.from_bytes(struct.pack("<I", rid) + secrets.token_bytes(15), "big")

    def issue(self, req):
        csr = x509.load_der_x509_csr(req["csr"])
        t = now()
        b = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.subject)
             .public_key(csr.public_key()).serial_number(self.serial_for(req["id"]))
             .not_valid_before(t - datetime.timedelta(minutes=10)).not_valid_after(t + datetime.timedelta(days=365))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
             .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                 [x509.UniformResourceIdentifier(self.crl_url)], None, None, None)]), critical=False)
             .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                 x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                 x509.UniformResourceIdentifier(f"{self.base_url}/CertEnroll/{self.file_name}.crt"))]), critical=False))
        # szOID_ENROLL_CERTTYPE_EXTENSION: the template name as a BMPString (v1 templates).
        name = req["template"].encode("utf-16-be")
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2"),
                                                       b"\x1e" + bytes([len(name)]) + name), critical=False)
        sans = []
        try:
            sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            pass
        # EDITF_ATTRIBUTESUBJECTALTNAME2: a "san:" request attribute adds names (dns=..&email=..).
        if self.editf_san and "san" in req["attributes"]:
            for part in req["attributes"]["san"].split("&"):
                kind, _, value = part.partition("=")
                kind = kind.strip().lower()
                if kind == "dns":
                    sans.append(x509.DNSName(value))
                elif kind == "email":
                    sans.append(x509.RFC822Name(value))
                elif kind == "url":
                    sans.append(x509.UniformResourceIdentifier(value))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        req["cert"] = b.sign(self.key, hashes.SHA256())
        req["status"] = "issued"
        req["message"] = "Issued"

    def decide(self, req):
        policy = self.templates.get(req["template"])
        if policy is None:
            req["status"] = "denied"
            req["message"] = ("Denied by Policy Module  0x80094800, The request was for a certificate template that is "
                              "not supported by the Active Directory Certificate Services policy: " + req["template"] + ".")
        elif policy == "denied":
            req["status"] = "denied"
            req["message"] = ("Denied by Policy Module  0x80094012, The permissions on the certificate template do not "
                              "allow the current user to enroll for this type of certificate.")
        elif policy == "pending":
            pass
        else:
            self.issue(req)

    def find_serial(self, serial_hex):
        want = int(serial_hex, 16)
        for r in self.requests.values():
            if r["cert"] is not None and r["cert"].serial_number == want:
                return r
        return None

    def crl(self):
        with self.lock:
            t = now()
            b = (x509.CertificateRevocationListBuilder().issuer_name(self.subject).last_update(t - datetime.timedelta(minutes=5))
                 .next_update(t + datetime.timedelta(days=7))
                 .add_extension(x509.CRLNumber(self.crl_number), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
            self.crl_number += 1
            for r in self.requests.values():
                if r["revoked"]:
                    when, reason = r["revoked"]
                    e = (x509.RevokedCertificateBuilder().serial_number(r["cert"].serial_number).revocation_date(when)
                         .add_extension(x509.CRLReason(REASONS[reason]), critical=False).build())
                    b = b.add_revoked_certificate(e)
            return b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def chain_p7(self, with_leaf=None):
        certs = ([with_leaf] if with_leaf is not None else []) + [self.cert, self.root]
        return pkcs7.serialize_certificates(certs, serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------
# HTML in the shapes certsrv sends (see README.md for where each comes from).
def page(ca, title, body):
    return f"""<HTML>
<Head>
    <Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">
    <Meta HTTP-Equiv="X-UA-Compatible" Content="IE=8">
    <Title>Microsoft Active Directory Certificate Services</Title>
</Head>
<Body BgColor=#FFFFFF Link=#0000FF VLink=#0000FF ALink=#0000FF><Font ID=locPageFont Face="Arial">
<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080>
<TR>
\t<TD><Font Color=#FFFFFF><LocID ID=locMSCertSrv><Font Face="Arial" Size=-1><B><I>Microsoft</I></B> Active Directory Certificate Services &nbsp;--&nbsp; {html.escape(ca.name)} &nbsp;</Font></LocID></Font></TD>
\t<TD ID=locHomeAlign Align=Right><A Href="/certsrv"><Font Color=#FFFFFF><LocID ID=locHomeLink><Font Face="Arial" Size=-1><B>Home</B></Font></LocID></Font></A></TD>
</TR>
</Table>
<P ID=locPageTitle> <B> {title} </B>
<!-- Green HR --><Table Border=0 CellSpacing=0 CellPadding=0 Width=100%><TR><TD BgColor=#008080><Img Src="certspc.gif" Alt="" Height=2 Width=1></TD></TR></Table>
{body}
</Font>
</Body>
</HTML>
"""


def issued_page(ca, rid):
    return page(ca, "Certificate Issued", f"""
<P ID=locInfoReqIDAndDisp> The certificate you requested was issued to you.
<P>
<Input Type=Radio Name=rbEncoding ID=rbDerEnc><Label For=rbDerEnc>DER encoded</Label> or
<Input Type=Radio Name=rbEncoding ID=rbB64Enc Checked><Label For=rbB64Enc>Base 64 encoded</Label>
<P>
<A Href="certnew.cer?ReqID={rid}&amp;Enc=b64"><Img Src="certCert.gif" Alt="">Download certificate</A><BR>
<A Href="certnew.p7b?ReqID={rid}&amp;Enc=b64"><Img Src="certCert.gif" Alt="">Download certificate chain</A>
<Script Language="JavaScript">
\tfunction handleGetCert() {{
\t\tlocation="certnew.cer?ReqID={rid}&"+getEncoding();
\t}}
\tfunction handleGetChain() {{
\t\tlocation="certnew.p7b?ReqID={rid}&"+getEncoding();
\t}}
</Script>
""")


def pending_page(ca, rid):
    return page(ca, "Certificate Pending", f"""
<P ID=locInfoPending>Your certificate request has been received. However, you must wait for an administrator to issue the certificate you requested.
<P ID=locReqID>Your Request Id is {rid}.
<P ID=locPendingReturn>Please return to this web site in a day or two to retrieve your certificate.
<P ID=locNote><Font Size=-1><I>Note: You must return with this web browser within 10 days to retrieve your certificate</I></Font>
""")


def denied_page(ca, message):
    # Real certfnsh.asp: "Your certificate request was denied." then the disposition message.
    return page(ca, "Certificate Request Denied", f"""
<P ID=locDenied>Your certificate request was denied.
<P ID=locContactAdmin>Contact your administrator for further information.
<P ID=locDispMsg>The disposition message is "{html.escape(message, quote=False)}".
""")


def error_page(ca, disposition, message, last_status):
    return page(ca, "Error", f"""
<P ID=locContactAdmin>Contact your administrator for further assistance.
</P>
<DL><DD>
\t<DL>
\t<DT ID=locModeLabel><Font Size=-1><B>Request Mode:</B></Font></DT><DD>
\t\t <LocID ID=locModeSpacer>-</LocID>
\t\t\t<LocID ID=locModeCertFetch>(certnew.cer/certnew.p7b/certcrl.crl certificate/crl fetch)</LocID>
\t</DD>
\t<DT ID=locDispLabel><Font Size=-1><B>Disposition:</B></Font></DT><DD>
\t\t{disposition}
\t</DD>
\t<DT ID=locDispMsgLabel><Font Size=-1><B>Disposition message:</B></Font></DT><DD>
\t\t{html.escape(message, quote=False)}
\t</DD>
\t<DT ID=locResultLabel><Font Size=-1><B>Result:</B></Font></DT><DD>
\t\tThe operation completed successfully. 0x0 (WIN32: 0)
\t</DD>
\t<DT ID=locLastStatLabel><Font Size=-1><B>LastStatus:</B></Font></DT><DD>
\t\t{last_status}
\t</DD>
\t</DL>
</DD></DL>
""")


def certcarc_page(ca):
    return page(ca, "Download a CA Certificate, Certificate Chain, or CRL", """
<Form Name=UIForm>
<Select Size=4 Name=lbCaInstance ID=lbCaID>
\t<Option Value="0" Selected><LocID ID=locCurCertEntry>Current</LocID>
</Select>
</Form>
<Script Language="JavaScript">
\tvar CRL_AVAILABLE=3; // == CA_DISP_VALID
\tvar nRenewals=0;
\tvar rgCrlState=new Array(
\t\t3
\t\t);
\tfunction handleGetChain() {
\t\tlocation="certnew.p7b?ReqID=CACert&Renewal="+getChosenRenewal()+"&"+getEncoding();
\t}
</Script>
""")


# ---------------------------------------------------------------------------------------------
# SOAP
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://www.w3.org/2005/08/addressing",
    "wst": "http://docs.oasis-open.org/ws-sx/ws-trust/200512",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "enr": "http://schemas.microsoft.com/windows/pki/2009/01/enrollment",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "auth": "http://schemas.xmlsoap.org/ws/2006/12/authorization",
}
# WS-Management (DSP0226 1.0, as WinRM speaks it) uses the 2004/08 addressing namespace.
WSMAN_NS = dict(NS, a="http://schemas.xmlsoap.org/ws/2004/08/addressing")
WSTEP_ISSUE = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue"
WSTEP_QUERY = "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/QueryTokenStatus"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
B64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary"


def wstep_response(relates_to, req, ca):
    disposition = html.escape(req["message"], quote=False)
    if req["status"] == "issued":
        leaf = req["cert"].public_bytes(serialization.Encoding.DER)
        p7 = base64.b64encode(ca.chain_p7(req["cert"])).decode()
        token = f"""<BinarySecurityToken ValueType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#PKCS7" EncodingType="{B64}" xmlns="{NS['wsse']}">{p7}</BinarySecurityToken>
<RequestedSecurityToken>
<BinarySecurityToken ValueType="{X509V3}" EncodingType="{B64}" xmlns="{NS['wsse']}">{base64.b64encode(leaf).decode()}</BinarySecurityToken>
</RequestedSecurityToken>"""
    else:  # pending: a reference to the token, no token (MS-WSTEP; what cepces reads as "wait")
        token = f"""<RequestedSecurityToken>
<SecurityTokenReference xmlns="{NS['wsse']}"><Reference URI="{req['id']}"/></SecurityTokenReference>
</RequestedSecurityToken>"""
    return f"""<s:Envelope xmlns:s="{NS['s']}" xmlns:a="{NS['a']}">
<s:Header>
<a:Action s:mustUnderstand="1">http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RSTRC/wstep</a:Action>
<a:RelatesTo>{html.escape(relates_to)}</a:RelatesTo>
</s:Header>
<s:Body>
<RequestSecurityTokenResponseCollection xmlns="{NS['wst']}">
<RequestSecurityTokenResponse>
<TokenType>{X509V3}</TokenType>
<DispositionMessage xml:lang="en-US" xmlns="{NS['enr']}">{disposition}</DispositionMessage>
{token}
<RequestID xmlns="{NS['enr']}">{req['id']}</RequestID>
</RequestSecurityTokenResponse>
</RequestSecurityTokenResponseCollection>
</s:Body>
</s:Envelope>"""


def wstep_fault(relates_to, error_code, request_id, text=""):
    # As captured from a real CES (adcs-rs test data): Receiver fault, CertificateEnrollmentWSDetail.
    rid = f"<RequestID>{request_id}</RequestID>" if request_id is not None else "<RequestID i:nil=\"true\" xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\"/>"
    return f"""<s:Envelope xmlns:s="{NS['s']}" xmlns:a="{NS['a']}">
<s:Header>
<a:Action s:mustUnderstand="1">http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RequestSecurityTokenCertificateEnrollmentWSDetailFault</a:Action>
<a:RelatesTo>{html.escape(relates_to)}</a:RelatesTo>
</s:Header>
<s:Body>
<s:Fault>
<s:Code><s:Value>s:Receiver</s:Value></s:Code>
<s:Reason><s:Text xml:lang="en-US">{html.escape(text, quote=False)}</s:Text></s:Reason>
<s:Detail>
<CertificateEnrollmentWSDetail xmlns="{NS['enr']}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<BinaryResponse i:nil="true" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"/>
<ErrorCode>{error_code}</ErrorCode>
<InvalidRequest>true</InvalidRequest>
{rid}
</CertificateEnrollmentWSDetail>
</s:Detail>
</s:Fault>
</s:Body>
</s:Envelope>"""


def hresult(code_hex):
    v = int(code_hex, 16)
    return v - (1 << 32) if v & 0x80000000 else v


# WinRM (MS-WSMV / DSP0226) shell answers
WSMAN_SHELL_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"


def wsman_envelope(action, relates_to, body):
    return f"""<s:Envelope xml:lang="en-US" xmlns:s="{NS['s']}" xmlns:a="{WSMAN_NS['a']}" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:w="{NS['w']}" xmlns:rsp="{NS['rsp']}" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">
<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:RelatesTo>{html.escape(relates_to)}</a:RelatesTo></s:Header>
<s:Body>{body}</s:Body>
</s:Envelope>"""


def wsman_fault(relates_to, code, text):
    return f"""<s:Envelope xml:lang="en-US" xmlns:s="{NS['s']}" xmlns:a="{WSMAN_NS['a']}" xmlns:w="{NS['w']}">
<s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action><a:RelatesTo>{html.escape(relates_to)}</a:RelatesTo></s:Header>
<s:Body><s:Fault><s:Code><s:Value>s:{"Receiver" if code == "TimedOut" else "Sender"}</s:Value><s:Subcode><s:Value>w:{code}</s:Value></s:Subcode></s:Code>
<s:Reason><s:Text xml:lang="en-US">{html.escape(text, quote=False)}</s:Text></s:Reason></s:Fault></s:Body>
</s:Envelope>"""


def cmd_split(line):
    """cmd.exe-like argument splitting: whitespace separates, double quotes group."""
    out, cur, quoted, has = [], "", False, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            has = True
        elif ch.isspace() and not quoted:
            if has:
                out.append(cur)
            cur, has = "", False
        else:
            cur += ch
            has = True
    if has:
        out.append(cur)
    return out


# ---------------------------------------------------------------------------------------------
class State:
    def __init__(self, args, ca):
        self.args = args
        self.ca = ca
        self.accounts = [(*split_account(args.user), args.password)]
        self.winrm_accounts = [(*split_account(args.winrm_user), args.winrm_password)] if args.winrm_user else []
        self.auth_schemes = args.auth.split(",")
        self.mode = "normal"
        self.delay = 0.0
        self.shells = {}  # shell id -> {command id -> (exit, stdout, stderr)}
        self.receive_timeouts = 0  # Receives to answer with w:TimedOut first (a slow command)
        self.log = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def log_message(self, fmt, *a):
        sys.stderr.write("adcs-standin: " + (fmt % a) + "\n")

    @property
    def st(self) -> State:
        return self.server.state

    def send(self, code, body, ctype="text/html", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    # -- authentication -----------------------------------------------------------------------
    def authenticate(self, accounts):
        """Returns the account name, or None after answering 401 itself."""
        if getattr(self, "ntlm_user", None):  # NTLM authenticates the connection (as IIS does)
            if not self.headers.get("Authorization"):
                return self.ntlm_user
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in self.st.auth_schemes:
            try:
                user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except Exception:
                user, password = "", ""
            d, u = split_account(user)
            for ad, au, ap in accounts:
                if u.lower() == au.lower() and (not d or d.lower() == ad.lower()) and hmac.compare_digest(password, ap):
                    self.st.log.append(f"basic logon {ad}\\{au}")
                    return f"{ad}\\{au}"
            self.st.log.append(f"basic logon failure for {user}")
        elif scheme == "ntlm" and "ntlm" in self.st.auth_schemes:
            try:
                msg = base64.b64decode(value)
                kind = struct.unpack_from("<I", msg, 8)[0] if msg[:8] == NTLM_SIG else 0
            except Exception:
                kind = 0
            if kind == 1:
                self.ntlm_challenge = secrets.token_bytes(8)
                t2 = ntlm_challenge(accounts[0][0] if accounts else "CORP", self.ntlm_challenge)
                self.send(401, "", headers=[("WWW-Authenticate", "NTLM " + base64.b64encode(t2).decode())])
                return None
            if kind == 3 and getattr(self, "ntlm_challenge", None):
                try:
                    who = ntlm_verify(msg, self.ntlm_challenge, accounts)
                    self.st.log.append(f"ntlmv2 logon {who}")
                    self.ntlm_user = who
                    return who
                except (ValueError, PermissionError, struct.error) as e:
                    self.st.log.append(f"ntlm: {e}")
                finally:
                    self.ntlm_challenge = None
        headers = []
        if "ntlm" in self.st.auth_schemes:
            headers.append(("WWW-Authenticate", "NTLM"))
        if "basic" in self.st.auth_schemes:
            headers.append(("WWW-Authenticate", 'Basic realm="127.0.0.1"'))
        self.send(401, page(self.st.ca, "401 - Unauthorized", "<P>You do not have permission to view this directory or page using the credentials that you supplied."),
                  headers=headers)
        return None

    # -- routing ------------------------------------------------------------------------------
    def route(self):
        length = int(self.headers.get("Content-Length", "0") or 0)
        if length > MAX_BODY:
            self.send(413, "too large")
            self.close_connection = True
            return
        self.body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        path = url.path
        self.st.log.append(f"{self.command} {path} UA={self.headers.get('User-Agent', '')}")
        if path.startswith("/_control/"):
            return self.control(path[len("/_control/"):])
        if path.startswith("/CertEnroll/"):
            return self.cert_enroll(path[len("/CertEnroll/"):])
        if path == "/wsman":
            who = self.authenticate(self.st.winrm_accounts)
            return self.wsman() if who else None
        if path.lower() == f"/{self.st.ca.name}_CES_UsernamePassword/service.svc/CES".lower().replace(" ", "%20") or \
                path.lower().endswith("_ces_usernamepassword/service.svc/ces"):
            if self.failure_mode("application/soap+xml; charset=utf-8"):
                return
            return self.ces()
        if path.lower().startswith("/certsrv"):
            who = self.authenticate(self.st.accounts)
            if not who:
                return
            if self.failure_mode("text/html"):
                return
            return self.certsrv(path[len("/certsrv"):].lstrip("/").lower())
        self.send(404, page(self.st.ca, "404 - File or directory not found.", ""))

    def failure_mode(self, ctype):
        mode = self.st.mode
        if mode == "slow":
            time.sleep(self.st.delay)
            return False
        if mode == "malformed":
            self.send(200, "<html><body>Service temporarily reconfigured <b>", ctype)
            return True
        if mode == "oversized":
            self.send(200, "<html><body>" + "A" * (16 << 20) + "</body></html>", ctype)
            return True
        if mode == "error500":
            self.send(500, page(self.st.ca, "500 - Internal server error.", ""), "text/html")
            return True
        return False

    # -- certsrv ------------------------------------------------------------------------------
    def certsrv(self, page_name):
        ca = self.st.ca
        q = lambda k: self.query.get(k, [""])[0]
        if page_name in ("", "default.asp"):
            return self.send(200, page(ca, "Welcome", "<P>Use this Web site to request a certificate."))
        if page_name == "certfnsh.asp" and self.command == "POST":
            form = urllib.parse.parse_qs(self.body.decode("latin-1"), keep_blank_values=True)
            f = lambda k: form.get(k, [""])[0]
            if f("Mode") != "newreq":
                return self.send(200, denied_page(ca, "Error: unknown Mode"))
            text = f("CertRequest")
            b64 = re.sub(r"-----[A-Z ]+-----", "", text)
            try:
                der = base64.b64decode("".join(b64.split()), validate=True)
                x509.load_der_x509_csr(der)
            except Exception:
                return self.send(200, denied_page(ca, "Error Parsing Request  ASN1 bad tag value met. 0x8009310b (ASN: 267 CRYPT_E_ASN1_BADTAG)"))
            attributes = {}
            for line in f("CertAttrib").replace("\r", "\n").split("\n"):
                k, sep, v = line.partition(":")
                if sep:
                    attributes[k.strip().lower()] = v.strip()
            template = attributes.get("certificatetemplate", "")
            if not template:
                return self.send(200, denied_page(ca, "Denied by Policy Module  0x80094801, The request does not contain a certificate template extension or the CertificateTemplate request attribute."))
            req = ca.new_request(der, template, attributes)
            with ca.lock:
                ca.decide(req)
            if req["status"] == "issued":
                return self.send(200, issued_page(ca, req["id"]))
            if req["status"] == "pending":
                return self.send(200, pending_page(ca, req["id"]))
            return self.send(200, denied_page(ca, req["message"]))
        if page_name == "certnew.cer":
            rid = q("ReqID")
            enc = q("Enc") or "b64"
            if rid == "CACert":
                cert = ca.cert
            else:
                req = ca.requests.get(int(rid)) if rid.isdigit() else None
                if req is None:
                    return self.send(200, error_page(ca, "0 - (unknown)", "Error: The requested property value is empty.",
                                                     "The requested property value is empty. 0x80094004 (-2146877436 CERTSRV_E_PROPERTY_EMPTY)"))
                if req["status"] == "pending":
                    return self.send(200, error_page(ca, "5 - (under submission)", req["message"],
                                                     "The operation completed successfully. 0x0 (WIN32: 0)"))
                if req["status"] == "denied":
                    return self.send(200, error_page(ca, "2 - (denied)", req["message"],
                                                     "The request was denied by a certificate manager or CA administrator. 0x80094014"))
                cert = req["cert"]
            if enc == "bin":
                return self.send(200, cert.public_bytes(serialization.Encoding.DER), "application/pkix-cert")
            return self.send(200, cert.public_bytes(serialization.Encoding.PEM), "application/pkix-cert")
        if page_name == "certnew.p7b":
            rid = q("ReqID")
            leaf = None
            if rid != "CACert":
                req = ca.requests.get(int(rid)) if rid.isdigit() else None
                if req is None or req["cert"] is None:
                    return self.send(200, error_page(ca, "0 - (unknown)", "Error: The requested property value is empty.",
                                                     "The requested property value is empty. 0x80094004 (-2146877436 CERTSRV_E_PROPERTY_EMPTY)"))
                leaf = req["cert"]
            elif q("Renewal") not in ("0", ""):
                return self.send(200, error_page(ca, "0 - (unknown)", "Error: The parameter is incorrect.",
                                                 "The parameter is incorrect. 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)"))
            der = ca.chain_p7(leaf)
            if q("Enc") == "bin":
                return self.send(200, der, "application/x-pkcs7-certificates")
            b64 = base64.encodebytes(der).decode()
            return self.send(200, "-----BEGIN CERTIFICATE-----\r\n" + b64 + "-----END CERTIFICATE-----\r\n", "application/x-pkcs7-certificates")
        if page_name == "certcarc.asp":
            return self.send(200, certcarc_page(ca))
        if page_name == "certcrl.crl":
            return self.send(200, ca.crl(), "application/pkix-crl")
        self.send(404, page(ca, "404 - File or directory not found.", ""))

    def cert_enroll(self, name):
        ca = self.st.ca
        if name == ca.file_name + ".crl":
            return self.send(200, ca.crl(), "application/pkix-crl")
        if name == ca.file_name + ".crt":
            return self.send(200, ca.cert.public_bytes(serialization.Encoding.DER), "application/pkix-cert")
        self.send(404, "not found", "text/plain")

    # -- CES (MS-WSTEP) -----------------------------------------------------------------------
    def ces(self):
        ca = self.st.ca
        ctype = "application/soap+xml; charset=utf-8"
        try:
            env = ET.fromstring(self.body)
        except ET.ParseError:
            return self.send(400, "", "text/html")
        message_id = env.findtext(".//a:MessageID", "", NS)
        # UsernamePassword endpoint: WS-Security UsernameToken in the header (message credentials).
        user = env.findtext(".//wsse:Security/wsse:UsernameToken/wsse:Username", None, NS)
        password = env.findtext(".//wsse:Security/wsse:UsernameToken/wsse:Password", None, NS)
        ok = False
        if user is not None and password is not None:
            d, u = split_account(user)
            for ad, au, ap in self.st.accounts:
                if u.lower() == au.lower() and (not d or d.lower() == ad.lower()) and hmac.compare_digest(password, ap):
                    ok = True
        if not ok:
            self.st.log.append(f"ces: security token rejected for {user}")
            body = f"""<s:Envelope xmlns:s="{NS['s']}" xmlns:a="{NS['a']}"><s:Header><a:Action s:mustUnderstand="1">http://www.w3.org/2005/08/addressing/soap/fault</a:Action></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value xmlns:a="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">a:InvalidSecurity</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">An error occurred when verifying security for the message.</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"""
            return self.send(500, body, ctype)
        rst = env.find(".//wst:RequestSecurityToken", NS)
        if rst is None:
            return self.send(500, wstep_fault(message_id, hresult("80070057"), None, "no RequestSecurityToken"), ctype)
        request_type = rst.findtext("wst:RequestType", "", NS)
        if request_type == WSTEP_QUERY:
            rid = rst.findtext("enr:RequestID", "", NS).strip()
            req = ca.requests.get(int(rid)) if rid.isdigit() else None
            if req is None:
                return self.send(500, wstep_fault(message_id, hresult("80094004"), rid or None), ctype)
            if req["status"] == "denied":
                return self.send(500, wstep_fault(message_id, hresult("80094014"), req["id"], req["message"]), ctype)
            return self.send(200, wstep_response(message_id, req, ca), ctype)
        if request_type != WSTEP_ISSUE:
            return self.send(500, wstep_fault(message_id, hresult("80070057"), None, "unsupported RequestType"), ctype)
        token = rst.find("wsse:BinarySecurityToken", NS)
        try:
            der = base64.b64decode("".join((token.text or "").split()), validate=True)
            x509.load_der_x509_csr(der)
        except Exception:
            return self.send(500, wstep_fault(message_id, hresult("8009310b"), None), ctype)
        # Request attributes travel as WS-Authorization AdditionalContext items (MS-WSTEP 2.2.9).
        attributes = {}
        for item in rst.findall(".//auth:AdditionalContext/auth:ContextItem", NS):
            attributes[(item.get("Name") or "").strip().lower()] = (item.findtext("auth:Value", "", NS) or "").strip()
        template = attributes.get("certificatetemplate", "")
        req = ca.new_request(der, template, attributes)
        with ca.lock:
            ca.decide(req)
        if req["status"] == "denied":
            code = "80094800" if "0x80094800" in req["message"] else "80094012"
            return self.send(500, wstep_fault(message_id, hresult(code), req["id"], req["message"]), ctype)
        return self.send(200, wstep_response(message_id, req, ca), ctype)

    # -- WinRM ----------------------------------------------------------------------------------
    def wsman(self):
        ctype = "application/soap+xml;charset=UTF-8"
        try:
            env = ET.fromstring(self.body)
        except ET.ParseError:
            return self.send(400, "", "text/html")
        action = env.findtext(".//a:Action", "", WSMAN_NS)
        mid = env.findtext(".//a:MessageID", "", WSMAN_NS)
        resource = env.findtext(".//w:ResourceURI", "", WSMAN_NS)
        shell_id = None
        for sel in env.findall(".//w:SelectorSet/w:Selector", WSMAN_NS):
            if sel.get("Name") == "ShellId":
                shell_id = sel.text
        if resource != WSMAN_SHELL_CMD:
            return self.send(500, wsman_fault(mid, "DestinationUnreachable", "The WS-Management service cannot process the request. The resource URI is not supported."), ctype)
        if action == "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create":
            sid = str(uuid.uuid4()).upper()
            self.st.shells[sid] = {}
            body = f"""<x:ResourceCreated><a:Address>{html.escape(self.headers.get('Host', ''))}/wsman</a:Address><a:ReferenceParameters><w:ResourceURI>{WSMAN_SHELL_CMD}</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">{sid}</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId><rsp:ResourceUri>{WSMAN_SHELL_CMD}</rsp:ResourceUri><rsp:Owner>{html.escape(self.ntlm_user if getattr(self, 'ntlm_user', None) else 'user')}</rsp:Owner><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"""
            return self.send(200, wsman_envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", mid, body), ctype)
        if shell_id not in self.st.shells:
            return self.send(500, wsman_fault(mid, "InvalidSelectors", "The WS-Management service cannot process the request because the request contained invalid selectors for the resource."), ctype)
        shell = self.st.shells[shell_id]
        if action == "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command":
            line = (env.findtext(".//rsp:CommandLine/rsp:Command", "", WSMAN_NS) + " " +
                    " ".join(a.text or "" for a in env.findall(".//rsp:CommandLine/rsp:Arguments", WSMAN_NS))).strip()
            cid = str(uuid.uuid4()).upper()
            shell[cid] = self.run_command(line)
            body = f"<rsp:CommandResponse><rsp:CommandId>{cid}</rsp:CommandId></rsp:CommandResponse>"
            return self.send(200, wsman_envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse", mid, body), ctype)
        if action == "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive":
            stream = env.find(".//rsp:Receive/rsp:DesiredStream", WSMAN_NS)
            cid = stream.get("CommandId") if stream is not None else None
            if cid not in shell:
                return self.send(500, wsman_fault(mid, "InvalidParameter", "The parameter is incorrect."), ctype)
            if self.st.receive_timeouts > 0:
                self.st.receive_timeouts -= 1
                return self.send(500, wsman_fault(mid, "TimedOut", "The WS-Management service cannot complete the operation within the time specified in OperationTimeout."), ctype)
            code, out, err = shell[cid]
            enc = lambda s: base64.b64encode(s.encode("utf-8")).decode()
            body = (f"<rsp:ReceiveResponse>"
                    f"<rsp:Stream Name=\"stdout\" CommandId=\"{cid}\">{enc(out)}</rsp:Stream>"
                    f"<rsp:Stream Name=\"stdout\" CommandId=\"{cid}\" End=\"true\"></rsp:Stream>"
                    + (f"<rsp:Stream Name=\"stderr\" CommandId=\"{cid}\">{enc(err)}</rsp:Stream>" if err else "") +
                    f"<rsp:Stream Name=\"stderr\" CommandId=\"{cid}\" End=\"true\"></rsp:Stream>"
                    f"<rsp:CommandState CommandId=\"{cid}\" State=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done\">"
                    f"<rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>")
            return self.send(200, wsman_envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse", mid, body), ctype)
        if action == "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal":
            return self.send(200, wsman_envelope("http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse", mid, "<rsp:SignalResponse/>"), ctype)
        if action == "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete":
            del self.st.shells[shell_id]
            return self.send(200, wsman_envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", mid, ""), ctype)
        return self.send(500, wsman_fault(mid, "ActionNotSupported", "The action is not supported by the service."), ctype)

    def run_command(self, line):
        """Runs what the stand-in knows of certutil: -config "<config>" -revoke <serial> [reason]."""
        ca = self.st.ca
        self.st.log.append(f"winrm command: {line}")
        argv = cmd_split(line)
        if not argv or argv[0].lower() not in ("certutil", "certutil.exe"):
            name = argv[0] if argv else ""
            return 1, "", f"'{name}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
        args = argv[1:]
        config = None
        if len(args) >= 2 and args[0].lower() in ("-config", "/config"):
            config, args = args[1], args[2:]
        if config is not None and config.lower() != self.st.args.ca_config.lower():
            return (hresult("800706ba"), "",
                    f"CertUtil: -revoke command FAILED: 0x800706ba (WIN32: 1722 RPC_S_SERVER_UNAVAILABLE)\r\nCertUtil: The RPC server is unavailable.\r\n")
        if len(args) < 2 or args[0].lower() != "-revoke":
            return hresult("80070057"), "", "CertUtil: -? command FAILED: 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)\r\nCertUtil: The parameter is incorrect.\r\n"
        serial = args[1]
        try:
            reason = int(args[2]) if len(args) > 2 else 0
        except ValueError:
            reason = -2
        if reason not in REASONS:
            return hresult("80070057"), "", "CertUtil: -revoke command FAILED: 0x80070057 (WIN32: 87 ERROR_INVALID_PARAMETER)\r\nCertUtil: The parameter is incorrect.\r\n"
        with ca.lock:
            req = ca.find_serial(serial) if re.fullmatch(r"[0-9A-Fa-f]{1,64}", serial) else None
            if req is None:
                return (hresult("80092004"), "",
                        "CertUtil: -revoke command FAILED: 0x80092004 (-2146885628 CRYPT_E_NOT_FOUND)\r\nCertUtil: Cannot find object or property.\r\n")
            if req["revoked"] is None:
                req["revoked"] = (now(), reason)
        return 0, (f"Revoking \"{serial}\" -- Reason: {REASON_TEXT[reason]}\r\n"
                   "CertUtil: -revoke command completed successfully.\r\n"), ""

    # -- control (tests only) ---------------------------------------------------------------
    def control(self, what):
        ca = self.st.ca
        q = lambda k, d="": self.query.get(k, [d])[0]
        if what in ("approve", "deny"):
            rid = q("ReqID")
            with ca.lock:
                req = ca.requests.get(int(rid)) if rid.isdigit() else None
                if req is None or req["status"] != "pending":
                    return self.send(404, f"no pending request {rid}\n", "text/plain")
                if what == "approve":
                    ca.issue(req)
                else:
                    req["status"] = "denied"
                    req["message"] = q("message", "Denied by Officer: request refused by the CA manager")
            return self.send(200, f"{req['status']} {rid}\n", "text/plain")
        if what == "mode":
            self.st.mode = q("set", "normal")
            self.st.delay = float(q("seconds", "0") or 0)
            return self.send(200, f"mode {self.st.mode}\n", "text/plain")
        if what == "winrm":
            self.st.receive_timeouts = int(q("receive_timeouts", "0") or 0)
            return self.send(200, "ok\n", "text/plain")
        if what == "requests":
            with ca.lock:
                out = [{"id": r["id"], "status": r["status"], "template": r["template"], "message": r["message"],
                        "attributes": r["attributes"],
                        "serial": format(r["cert"].serial_number, "X") if r["cert"] is not None else None,
                        "revoked": r["revoked"] is not None} for r in ca.requests.values()]
            return self.send(200, json.dumps(out), "application/json")
        if what == "log":
            return self.send(200, "\n".join(self.st.log) + "\n", "text/plain")
        self.send(404, "unknown control\n", "text/plain")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cert", required=True, help="TLS certificate (PEM)")
    p.add_argument("--key", required=True, help="TLS key (PEM)")
    p.add_argument("--port-file", required=True, help="the chosen port is written here once listening")
    p.add_argument("--ca-dir", required=True, help="the CA's certificates are written here (root.pem, issuing.pem)")
    p.add_argument("--ca-name", default="Stand-in Issuing CA")
    p.add_argument("--ca-config", default="ca01.corp.test\\Stand-in Issuing CA")
    p.add_argument("--user", default="CORP\\svc-enroll")
    p.add_argument("--password", default="Enr0ll!pass")
    p.add_argument("--winrm-user", default="CORP\\svc-camanager")
    p.add_argument("--winrm-password", default="M4nage!pass")
    p.add_argument("--auth", default="ntlm,basic", help="schemes offered: ntlm,basic")
    p.add_argument("--template", action="append", default=[], help="NAME=issue|pending|denied")
    p.add_argument("--editf-san", action="store_true", help="EDITF_ATTRIBUTESUBJECTALTNAME2 set on the CA")
    a = p.parse_args()
    templates = {"User": "issue"}
    for t in a.template:
        n, _, v = t.partition("=")
        templates[n] = v
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    ca = CA(a.ca_name, f"https://127.0.0.1:{port}", templates, a.editf_san)
    server.state = State(a, ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    os.makedirs(a.ca_dir, exist_ok=True)
    with open(os.path.join(a.ca_dir, "root.pem"), "wb") as f:
        f.write(ca.root.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(a.ca_dir, "issuing.pem"), "wb") as f:
        f.write(ca.cert.public_bytes(serialization.Encoding.PEM))
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, a.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
