#!/usr/bin/env python3
"""A small HTTPS (or HTTP) server for the SDK HTTP client's tests.

usage: https_test_server.py CERT KEY PORT_FILE [--plain]
Writes the port it listens on (127.0.0.1, chosen by the kernel) to PORT_FILE, then serves:
  GET  /ok           200 "hello", header X-Test: 1, echoes the request's Via header as X-Via
  GET  /big?n=N      200 with N bytes
  GET  /slow?s=S     waits S seconds, then 200
  GET  /basic        401 with a Basic challenge unless the credentials are user:secret
  GET  /busy         429 with Retry-After: 7
  POST /echo         200 with the request body; X-Method: the method
"""
import base64, http.server, socketserver, ssl, sys, time, urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/ok":
            self.send(200, b"hello", [("X-Test", "1"), ("X-Via", self.headers.get("Via", ""))])
        elif url.path == "/big":
            self.send(200, b"x" * int(q.get("n", "100000")))
        elif url.path == "/slow":
            time.sleep(float(q.get("s", "3")))
            self.send(200, b"late")
        elif url.path == "/basic":
            want = "Basic " + base64.b64encode(b"user:secret").decode()
            if self.headers.get("Authorization") == want:
                self.send(200, b"welcome")
            else:
                self.send(401, b"no", [("WWW-Authenticate", 'Basic realm="test"')])
        elif url.path == "/busy":
            self.send(429, b"slow down", [("Retry-After", "7")])
        else:
            self.send(404, b"not here")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send(200, body, [("X-Method", self.command)])

    do_PUT = do_POST


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    cert, key, port_file = sys.argv[1:4]
    server = Server(("127.0.0.1", 0), Handler)
    if "--plain" not in sys.argv:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


main()
