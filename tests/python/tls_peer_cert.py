#!/usr/bin/env python3
"""Connects to a TLS listener, verifies it against a CA (server name `localhost`) and prints the
SHA-256 of the certificate it presents (DER, hex) and the negotiated ALPN protocol.

    python3 tests/python/tls_peer_cert.py 127.0.0.1:8443 CA.pem [h2 http/1.1 ...] [--get /path]

With --get it then sends an HTTP/1.1 GET for that path and prints the response body.
"""
import hashlib
import socket
import ssl
import sys


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    args = sys.argv[3:]
    get = None
    if "--get" in args:
        get = args[args.index("--get") + 1]
        args = args[: args.index("--get")]
    if args:
        ctx.set_alpn_protocols(args)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
            print(hashlib.sha256(der).hexdigest(), s.selected_alpn_protocol() or "-", s.version())
            if get:
                s.sendall(f"GET {get} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                sys.stdout.write(data.decode("utf-8", "replace"))


if __name__ == "__main__":
    main()
