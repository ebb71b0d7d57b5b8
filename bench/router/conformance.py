"""Helpers of conformance.sh: a recording backend, and the replay of the
corpus against a proxy, each outcome as conformance.rs reports it."""
import os
import socket
import sys
import threading
import time


def read_request(conn):
    """One request off `conn`: (method, target, body) or None."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    method, target = lines[0].split(b" ")[:2]
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = dechunk(rest)
        while body is None:
            chunk = conn.recv(65536)
            if not chunk:
                return method.decode(), target.decode(), b"<cut>"
            rest += chunk
            body = dechunk(rest)
    else:
        length = int(fields.get(b"content-length", b"0"))
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest[:length]
    return method.decode(), target.decode(), body


def dechunk(raw):
    """The body of a whole chunked `raw` (trailers dropped), else None."""
    body = b""
    while True:
        size_line, found, raw = raw.partition(b"\r\n")
        if not found:
            return None
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return b"<bad chunk>"
        if size == 0:
            return body if (raw.startswith(b"\r\n") or b"\r\n\r\n" in raw) else None
        if len(raw) < size + 2:
            return None
        body, raw = body + raw[:size], raw[size + 2:]


def backend(port, log):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    lock = threading.Lock()

    def serve(conn):
        with conn:
            try:
                request = read_request(conn)
            except (ValueError, IndexError):
                # Bytes the backend cannot frame: what a desync looks like.
                request = ("?", "?", b"<unframed>")
            if request is None:
                return
            method, target, body = request
            shown = body.decode("latin-1") if body else "-"
            with lock, open(log, "a") as out:
                out.write(f"forward {method} {target} {shown}\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def replay(port, log, corpus):
    cases = [
        line.split(" | ")[0].strip()
        for line in open(os.path.join(corpus, "cases.txt"))
        if line.strip() and not line.startswith("#")
    ]
    for name in cases:
        raw = open(os.path.join(corpus, name + ".http"), "rb").read()
        before = len(open(log).readlines()) if os.path.exists(log) else 0
        answer = b""
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.settimeout(3)
            try:
                conn.sendall(raw)
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            except OSError:
                pass
        time.sleep(0.05)
        while answer.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in answer:
            answer = answer.split(b"\r\n\r\n", 1)[1]
        status = answer[9:12].decode() if answer.startswith(b"HTTP/1.") else "none"
        forwarded = open(log).readlines()[before:] if os.path.exists(log) else []
        if not forwarded:
            outcome = status
        elif len(forwarded) == 1:
            outcome = forwarded[0].strip() if status == "200" else f"{status} after {forwarded[0].strip()}"
        else:
            outcome = f"{status}, {len(forwarded)} requests forwarded"
        print(f"{name}\t{outcome}")


if __name__ == "__main__":
    if sys.argv[1] == "backend":
        backend(int(sys.argv[2]), sys.argv[3])
    else:
        replay(int(sys.argv[2]), sys.argv[3], sys.argv[4])
