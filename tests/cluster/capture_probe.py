"""What test_podnet.py runs inside a pod, as a given uid (standard library only: it runs under
the system's python3, which any uid can execute):

    capture_probe.py listen ADDRESS PORT   one line when bound, then one JSON line for the one
                                           connection it accepts: the address it arrived at,
                                           the peer, and SO_ORIGINAL_DST (null when no NAT
                                           redirect rewrote it)
    capture_probe.py dial HOST PORT        one JSON line: connected (with the address it
                                           resolved HOST to) or the errno's name
"""

from __future__ import annotations

import errno
import json
import socket
import struct
import sys

SO_ORIGINAL_DST = 80
DIAL_TIMEOUT = 5


def listen(address: str, port: int) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen()
    print("listening", flush=True)
    conn, peer = server.accept()
    try:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        _, original_port, packed = struct.unpack("!HH4s8x", raw)
        original = f"{socket.inet_ntoa(packed)}:{original_port}"
    except OSError:
        original = None
    local = "%s:%d" % conn.getsockname()
    # The original destination is the local address when nothing redirected the connection.
    print(json.dumps({"local": local, "peer": "%s:%d" % peer,
                      "original_dst": original if original != local else None}), flush=True)
    conn.close()


def dial(host: str, port: int) -> None:
    try:
        resolved = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as error:
        print(json.dumps({"connected": False, "error": f"resolve: {error}"}), flush=True)
        return
    try:
        with socket.create_connection((resolved, port), timeout=DIAL_TIMEOUT):
            print(json.dumps({"connected": True, "resolved": resolved}), flush=True)
    except OSError as error:
        name = errno.errorcode.get(error.errno or 0, type(error).__name__)
        print(json.dumps({"connected": False, "resolved": resolved, "error": name}), flush=True)


if __name__ == "__main__":
    {"listen": listen, "dial": dial}[sys.argv[1]](sys.argv[2], int(sys.argv[3]))
