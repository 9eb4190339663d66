"""Attacks on the release binary over loopback, as a client on the internet would make them.

Starts tansu, a JWKS endpoint with a real RSA key, and the bridge binary given as argv[1]
(tansu from PATH); then, scenario by scenario, attacks it, prints what it cost the bridge
(resident memory sampled every 20 ms from /proc, CPU from /proc/PID/stat) and fails unless
the bridge held. Bounded: the whole run takes about two minutes.

    python tests/attacks.py target/release/pubsub-kafka-bridge
"""

import base64
import concurrent.futures as futures
import http.server
import json
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import h2.config
import h2.connection
import h2.events
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

ROOT = pathlib.Path(__file__).resolve().parent.parent
AUDIENCE = "https://bridge.example.run.app/push"
PUSH_EMAIL = "push@project.iam.gserviceaccount.com"
KEY = serialization.load_pem_private_key((ROOT / "tests/data/keys/key1.pem").read_bytes(), None)
KID = "attack-key"
MIB = 1 << 20
# What a 256 MiB Cloud Run instance (the Terraform default) derives: (256 - 48) MiB / 4.
BUDGET_256_MIB_CONTAINER = 52 * MIB
FAILURES = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims=None, kid=KID, sign=True):
    """A token of `claims` over the push account's; a claim given as None is left out."""
    body = {
        "aud": AUDIENCE, "email": PUSH_EMAIL, "email_verified": True, "iss": "https://accounts.google.com",
        "iat": int(time.time()), "exp": int(time.time()) + 3600, "sub": "1",
    }
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    signing = b64u(json.dumps({"alg": "RS256", "kid": kid, "typ": "JWT"}).encode()) + "." + b64u(json.dumps(body).encode())
    signature = KEY.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256()) if sign else os.urandom(256)
    return signing + "." + b64u(signature)


def envelope(data, attributes=None):
    return json.dumps({
        "message": {"data": base64.b64encode(data).decode(), "messageId": str(time.time_ns()),
                    "publishTime": "2026-01-01T00:00:00Z", "attributes": attributes or {}},
        "subscription": "projects/p/subscriptions/attacks",
    }).encode()


class Process:
    """The bridge process: memory, CPU, metrics."""

    def __init__(self, binary, env, log):
        self.port = free_port()
        env = dict(env, PORT=str(self.port), RUST_LOG="warn")
        self.log = log
        self.proc = subprocess.Popen([binary], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if request("GET", "/healthz", port=self.port)[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"bridge did not start: {pathlib.Path(log).read_text()[-2000:]}")

    def rss(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metric(self, name):
        text = request("GET", "/metrics", port=self.port)[2].decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        raise KeyError(name)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Peak:
    """Samples a process's RSS every 20 ms while in use."""

    def __init__(self, process):
        self.process, self.peak, self.running = process, 0, True

    def __enter__(self):
        self.before = self.process.rss()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.rss())
            time.sleep(0.02)

    def __exit__(self, *_):
        self.running = False
        self.thread.join()

    def growth_mib(self):
        return (self.peak - self.before) / MIB


def read_response(sock, timeout=30):
    """Reads one HTTP/1.1 response: (status, headers dict, body); status 0 if the connection ended first."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0, {}, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def head_bytes(method, path, headers):
    lines = [f"{method} {path} HTTP/1.1", "Host: bridge"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(method, path, headers=None, body=b"", port=None, timeout=30):
    headers = dict(headers or {})
    if body or method == "POST":
        headers["Content-Length"] = str(len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head_bytes(method, path, headers) + body)
        return read_response(sock, timeout)


def push(bridge, body, token=None, timeout=30):
    """A push over a fresh connection; (status, body); 0 when the connection was reset unanswered."""
    try:
        status, _, answer = request("POST", "/", {"Authorization": f"Bearer {token or mint()}",
                                                   "Content-Type": "application/json"}, body, bridge.port, timeout)
        return status, answer
    except (ConnectionResetError, BrokenPipeError):
        return 0, b""


def closed_by_server(sock, within):
    """Whether the server closed `sock` within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


class Jwks(http.server.BaseHTTPRequestHandler):
    hang = False
    hits = 0

    def do_GET(self):
        Jwks.hits += 1
        if Jwks.hang:
            time.sleep(30)
        numbers = KEY.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        body = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": KID, "n": b64u(n),
                                     "e": b64u(numbers.e.to_bytes(3, "big"))}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        # Short-lived keys (the bridge's floor is 10 s) so the stale-key attack can be made.
        self.send_header("Cache-Control", "public, max-age=10")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def start_server(handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def silent_listener():
    """A TCP endpoint that accepts and never answers (a hung schema registry)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in iter(int, 1)], daemon=True).start()
    return listener.getsockname()[1]


# ---------------------------------------------------------------------------------------------
def idle_connections(bridge):
    print("\n== connections that send nothing, one byte, or half an HTTP/2 preface (1,500; header timeout 2 s; MAX_CONNECTIONS 1024)")
    socks = []
    with Peak(bridge) as peak:
        started = time.time()
        for i in range(1500):
            s = socket.create_connection(("127.0.0.1", bridge.port))
            s.sendall([b"", b"P", b"PRI * HTTP/2.0\r\n"][i % 3])
            socks.append(s)
        print(f"  figures: opening them took {time.time() - started:.1f} s: past 1,024 open and the listen backlog, "
              "connects wait until the deadline closes earlier ones")
        started = time.time()
        status, _ = push(bridge, envelope(b"while-held"))
        answered = time.time() - started
    check(status == 204, f"a valid push while they are held: {status} in {answered:.2f} s")
    deadline = time.time() + 6
    closed = sum(closed_by_server(s, max(0.05, deadline - time.time())) for s in socks)
    for s in socks:
        s.close()
    check(closed == len(socks), f"{closed} of {len(socks)} closed by the bridge within 6 s; RSS +{peak.growth_mib():.1f} MiB")


def stalled_body(bridge):
    print("\n== a verified body that stalls after the headers (body idle timeout 2 s)")
    s = socket.create_connection(("127.0.0.1", bridge.port))
    s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {mint()}", "Content-Length": "1000"}) + b"{\"mess")
    started = time.time()
    status, _, body = read_response(s, 10)
    took = time.time() - started
    check(status == 408 and took < 4, f"answered {status} {body[:40]!r} after {took:.1f} s")
    check(closed_by_server(s, 2), "and the connection closed")
    s.close()


def unauthenticated_uploads(bridge):
    print("\n== 48 unauthenticated 16 MiB uploads with Expect: 100-continue, stopped one byte short")
    length = 16 * MIB

    def upload(_):
        s = socket.create_connection(("127.0.0.1", bridge.port))
        s.sendall(head_bytes("POST", "/", {"Content-Length": str(length), "Expect": "100-continue"}))
        status, headers, _ = read_response(s, 10)
        sent = 0
        try:
            chunk = b"x" * MIB
            while sent < length - 1:
                sent += s.send(chunk[: length - 1 - sent])
        except OSError:
            pass
        s.close()
        return status, headers.get("connection"), sent

    with Peak(bridge) as peak:
        with futures.ThreadPoolExecutor(48) as pool:
            results = list(pool.map(upload, range(48)))
    statuses = {r[0] for r in results}
    taken = sum(r[2] for r in results) / MIB
    check(statuses == {401}, f"every one answered {statuses} (never 100 Continue), Connection: {results[0][1]}")
    check(peak.growth_mib() < 16, f"RSS +{peak.growth_mib():.1f} MiB while clients pushed {taken:.0f} MiB at a closed door")


def tiny_chunks(bridge):
    print("\n== a verified chunked body in 1-byte chunks (16 MiB limit)")
    s = socket.create_connection(("127.0.0.1", bridge.port))
    s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {mint()}", "Transfer-Encoding": "chunked"}))
    cpu = bridge.cpu()
    chunks = b"1\r\nx\r\n" * (256 * 1024)  # 1.5 MiB of wire per send
    sent_data = 0
    with Peak(bridge) as peak:
        try:
            for _ in range(16):  # up to 4 MiB of data, 24 MiB of wire
                s.sendall(chunks)
                sent_data += 256 * 1024
        except OSError:
            pass
        status, headers, _ = read_response(s, 10)
    s.close()
    cost = bridge.cpu() - cpu
    check(status == 413, f"answered {status} after the client sent {sent_data / MIB:.2f} MiB of data in 1-byte chunks")
    check(peak.growth_mib() < 32 and cost < 5,
          f"RSS +{peak.growth_mib():.1f} MiB, CPU {cost:.2f} s (before the fix: 15 MiB cost +492 MiB and 10 s)")


def h2_streams(bridge):
    print("\n== one HTTP/2 connection opening 200 streams of unfinished 1 MiB bodies")
    s = socket.create_connection(("127.0.0.1", bridge.port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    token = mint()
    s.settimeout(0.5)
    # Read the server's SETTINGS first so its stream limit applies.
    try:
        for event in conn.receive_data(s.recv(65536)):
            pass
    except (socket.timeout, TimeoutError):
        pass
    opened = refused_locally = 0
    with Peak(bridge) as peak:
        for i in range(200):
            stream = conn.get_next_available_stream_id()
            try:
                conn.send_headers(stream, [(":method", "POST"), (":path", "/"), (":scheme", "http"),
                                           (":authority", "bridge"), ("authorization", f"Bearer {token}"),
                                           ("content-length", str(MIB))])
            except h2.exceptions.TooManyStreamsError:
                refused_locally += 1
                continue
            opened += 1
            window = min(conn.local_flow_control_window(stream), 64 * 1024)
            while window > 0:
                piece = min(window, conn.max_outbound_frame_size)
                conn.send_data(stream, b"x" * piece)
                window -= piece
            s.sendall(conn.data_to_send())
        answers, resets = {}, 0
        deadline = time.time() + 8
        while time.time() < deadline and len(answers) + resets < opened:
            try:
                data = s.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers).get(":status")
                    answers[status] = answers.get(status, 0) + 1
                elif isinstance(event, h2.events.StreamReset):
                    resets += 1
            out = conn.data_to_send()
            if out:
                s.sendall(out)
    s.close()
    limit = conn.remote_settings.max_concurrent_streams
    check(limit <= 64, f"the bridge allows {limit} concurrent streams; {opened} opened, {refused_locally} held back by the client")
    check(sum(answers.values()) + resets >= opened,
          f"every opened stream ended within 8 s: answers {answers}, resets {resets}")
    check(peak.growth_mib() < 32, f"RSS +{peak.growth_mib():.1f} MiB (before the fix: +200 MiB, kept)")


def forged_tokens(bridge):
    print("\n== forged tokens naming the published key: CPU each (distinct tokens, keep-alive)")

    def run(claims, n=4500):
        """Bridge CPU per request in µs (/proc ticks are 10 ms: 4,500 requests resolve about 2 µs)."""
        tokens = [mint(dict(claims, jti=str(i)), sign=False) for i in range(n)]
        s = socket.create_connection(("127.0.0.1", bridge.port))
        cpu = bridge.cpu()
        statuses = set()
        for token in tokens:
            s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {token}", "Content-Length": "0"}))
            statuses.add(read_response(s)[0])
        s.close()
        return (bridge.cpu() - cpu) / n * 1e6, statuses

    wrong_aud, s1 = run({"aud": "https://someone-else.example"})
    expired, s2 = run({"exp": int(time.time()) - 3600})
    right_aud, s3 = run({})
    check(s1 == s2 == s3 == {401}, f"all answered 401: {s1 | s2 | s3}")
    print(f"  figures: wrong audience {wrong_aud:.0f} µs, expired {expired:.0f} µs, "
          f"well-formed for this audience (RSA) {right_aud:.0f} µs of bridge CPU per request "
          f"(the signature check: about {right_aud - wrong_aud:.0f} µs)")
    check(wrong_aud < right_aud and expired < right_aud, "claims are checked before the signature")
    # What a forged token adds over one refused on its claims is the signature check: aws-lc's RSA
    # (jsonwebtoken's aws_lc_rs backend) costs 13-27 µs of it here, the pure-Rust backend it replaced
    # 124-127 µs. The request around it (parsing, the log line, the 401) is held to the same run's
    # wrong-audience figure rather than to a fixed number: on a shared machine that baseline moved
    # from 16 to 56 µs between runs while the difference stayed at 13-31. The check allows half as
    # much again as the 30 µs aimed at, for that noise; the old backend is four times over it.
    signature = right_aud - wrong_aud
    check(signature <= 45, f"a forged well-formed token costs {signature:.0f} µs of CPU over one refused on its claims "
                           f"({right_aud:.0f} µs in all; about 30 aimed at, 45 at most)")


def long_lived_tokens(bridge):
    print("\n== genuinely signed tokens that outlive Google's one hour (exp - iat), or carry no iat")
    now = int(time.time())
    cases = {
        "ten years": mint({"iat": now, "exp": now + 10 * 365 * 86400, "jti": "ten-years"}),
        "an hour and a day": mint({"iat": now, "exp": now + 3600 + 86400, "jti": "a-day-more"}),
        "no iat": mint({"iat": None, "jti": "no-iat"}),
    }
    for name, token in cases.items():
        status, answer = push(bridge, envelope(b"long-lived"), token)
        code = json.loads(answer).get("error") if answer else None
        check(status == 401 and code == "invalid_token", f"{name}: answered {status} {code}")
    status, _ = push(bridge, envelope(b"one-hour"), mint({"iat": now, "exp": now + 3600, "jti": "one-hour"}))
    check(status == 204, f"Google's own lifetime, one hour: answered {status}")


def other_accounts_flood(bridge):
    print("\n== 1,100 valid tokens of other accounts (403) against the verified-token cache (1,024 entries)")
    push_token = mint({"jti": "the-push-token"})
    body = envelope(b"push")
    s = socket.create_connection(("127.0.0.1", bridge.port))

    def pushes(n=500):
        """Bridge CPU per push of the push token over this connection, and the last status."""
        cpu = bridge.cpu()
        for _ in range(n):
            s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {push_token}",
                                              "Content-Length": str(len(body))}) + body)
            status = read_response(s)[0]
        return (bridge.cpu() - cpu) / n * 1e6, status

    before, status = pushes()
    check(status == 204, f"the push token is accepted: {status}")
    cached = bridge.metric("pubsub_kafka_bridge_verified_tokens")
    statuses = set()
    for i in range(1100):
        token = mint({"email": f"other-{i}@elsewhere.iam.gserviceaccount.com", "jti": f"other-{i}"})
        s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {token}", "Content-Length": "0"}))
        statuses.add(read_response(s)[0])
    check(statuses == {403}, f"every other account answered {statuses}")
    after, status = pushes()
    s.close()
    check(status == 204 and bridge.metric("pubsub_kafka_bridge_verified_tokens") == cached,
          f"the verified-token cache is untouched by the refused tokens ({cached} before and after)")
    print(f"  figures: bridge CPU per push of the push token {before:.0f} µs before the flood, {after:.0f} µs after "
          "(clock-tick resolution; an RSA check alone costs about 15 µs)")


def kafka_stalled(bridge, tansu):
    print("\n== Kafka stalled (SIGSTOP): three waves of 400 parallel 1 MiB deliveries; budget of a 256 MiB instance")
    body = envelope(os.urandom(768 * 1024))
    tansu.send_signal(signal.SIGSTOP)
    try:
        peaks = []
        for wave in range(3):
            with Peak(bridge) as peak:
                with futures.ThreadPoolExecutor(400) as pool:
                    results = list(pool.map(lambda _: push(bridge, body, timeout=40), range(400)))
            statuses = {}
            for status, answer in results:
                key = f"{status} {json.loads(answer).get('error', '') if answer else 'reset'}"
                statuses[key] = statuses.get(key, 0) + 1
            peaks.append(peak.peak)
            held = bridge.metric("pubsub_kafka_bridge_inflight_bytes")
            check(all(r[0] in (0, 503) for r in results),
                  f"wave {wave + 1}: none acknowledged: {statuses}; peak RSS {peak.peak / MIB:.0f} MiB; "
                  f"{held / MIB:.0f} MiB still accounted (records the Kafka client holds)")
        check(max(peaks) < 256 * MIB and peaks[2] < peaks[0] + 24 * MIB,
              f"peak RSS per wave {[round(p / MIB) for p in peaks]} MiB: under a 256 MiB instance, not growing "
              f"(before the fix: 100 deliveries → 420 MiB, 2,000 → 6.5 GB, kept)")
    finally:
        tansu.send_signal(signal.SIGCONT)
    deadline = time.time() + 15
    while bridge.metric("pubsub_kafka_bridge_inflight_bytes") and time.time() < deadline:
        time.sleep(0.2)
    status, _ = push(bridge, envelope(b"after-the-stall"))
    check(status == 204 and bridge.metric("pubsub_kafka_bridge_inflight_bytes") == 0,
          f"Kafka back: the budget is whole again and a push is acknowledged ({status}); RSS {bridge.rss() / MIB:.0f} MiB")


class SilenceableProxy:
    """A TCP proxy in front of a broker whose open connections can be black-holed: bytes are read
    and dropped both ways, the sockets stay open (a hung broker, a paused VM, a NAT flow dropped
    without a reset), while new connections pass."""

    def __init__(self, upstream_port):
        self.upstream_port, self.connections, self.accepted = upstream_port, [], []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            self.accepted.append(time.time())
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            silent = threading.Event()
            self.connections.append(silent)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, silent), daemon=True).start()

    @staticmethod
    def _pump(source, sink, silent):
        try:
            while data := source.recv(65536):
                if not silent.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        if not silent.is_set():
            sink.close()

    def black_hole_open_connections(self):
        for silent in self.connections:
            silent.set()


def silent_broker(binary, env, work):
    print("\n== Kafka connections black-holed (bytes dropped, sockets open), new connections pass")
    kafka_port = free_port()
    proxy = SilenceableProxy(kafka_port)
    advertised = f"127.0.0.1:{proxy.port}"
    tansu = subprocess.Popen(["tansu", "broker", "--listener-url", f"tcp://127.0.0.1:{kafka_port}",
                              "--advertised-listener-url", f"tcp://{advertised}", "--storage-engine", "memory://tansu/"],
                             cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bridge = None
    try:
        for _ in range(100):
            if subprocess.run(["tansu", "topic", "create", "attacks", "--broker", f"tcp://127.0.0.1:{kafka_port}",
                               "--partitions", "1"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        bridge = Process(binary, dict(env, KAFKA_BOOTSTRAP_SERVERS=advertised), work / "bridge-silent.log")
        status, _ = push(bridge, envelope(b"warm"))
        check(status == 204, f"through the proxy: {status}")
        opened = len(proxy.accepted)
        proxy.black_hole_open_connections()
        silenced = time.time()
        statuses = []
        with futures.ThreadPoolExecutor(15) as pool:
            while time.time() - silenced < 30:
                results = list(pool.map(lambda _: push(bridge, envelope(b"during"), timeout=40), range(15)))
                statuses += [r[0] for r in results]
                if all(r[0] == 204 for r in results):
                    break
        recovered = time.time() - silenced
        new = [t - silenced for t in proxy.accepted[opened:]]
        deadline = time.time() + 15
        while bridge.metric("pubsub_kafka_bridge_inflight_requests") and time.time() < deadline:
            time.sleep(0.1)
        held = bridge.metric("pubsub_kafka_bridge_inflight_requests")
        live = request("GET", "/healthz", port=bridge.port)[0]
        check(recovered < 15 and new and held == 0 and live == 200,
              f"pushes acknowledged again after {recovered:.1f} s ({statuses.count(503)} answered 503 meanwhile); "
              f"first new broker connection after {new[0] if new else float('nan'):.1f} s, {len(new)} in all; "
              f"in-flight requests back to {held}; /healthz {live} "
              f"(before the fix: 503 for as long as the silence lasted, 0 new connections, 15 shares held)")
    finally:
        if bridge:
            bridge.stop()
        tansu.kill()


def hung_jwks(bridge):
    print("\n== JWKS endpoint hangs while the cached keys are stale; 3,000 forged tokens on 4 connections")
    time.sleep(11)  # keys (max-age 10 s) are stale now
    Jwks.hang, hits = True, Jwks.hits

    def flood(part):
        s = socket.create_connection(("127.0.0.1", bridge.port))
        statuses = set()
        for i in range(750):
            token = mint({"jti": f"{part}-{i}"}, sign=False)
            s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {token}", "Content-Length": "0"}))
            statuses.add(read_response(s)[0])
        s.close()
        return statuses

    started = time.time()
    with Peak(bridge) as peak:
        with futures.ThreadPoolExecutor(4) as pool:
            statuses = set().union(*pool.map(flood, range(4)))
    took = time.time() - started
    check(statuses == {401} and Jwks.hits - hits <= 1,
          f"all answered {statuses} in {took:.1f} s from the stale keys; JWKS fetches started: {Jwks.hits - hits} "
          f"(one background refresh, never one per request); RSS +{peak.growth_mib():.1f} MiB "
          "(before the fix: +325 MiB in 40 s, kept)")

    print("\n== JWKS endpoint hangs; 8 deliveries signed by a key id it has not published")
    time.sleep(10.5)  # the background refresh times out (5 s), then the 5 s rate limit passes
    hits = Jwks.hits
    started = time.time()
    with futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: push(bridge, envelope(b"k"), mint(kid="rotated")), range(8)))
    took = time.time() - started
    Jwks.hang = False
    check({r[0] for r in results} <= {401, 503} and took < 8,
          f"all answered ({sorted({r[0] for r in results})}) within {took:.1f} s; JWKS fetches: {Jwks.hits - hits}")
    check(Jwks.hits - hits == 1, "one fetch shared by every waiter")


def cloud_run_headers(binary, env, log):
    print("\n== behind Cloud Run IAM: an invoker's own token in X-Serverless-Authorization, "
          "the push account's claims forged in Authorization")
    bridge = Process(binary, dict(env, OIDC_TRUST_CLOUD_RUN_IAM="true"), log)

    def stripped(token):
        """The token as Cloud Run forwards one it verified."""
        return token.rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"

    def send(headers):
        status, _, answer = request("POST", "/", dict(headers, **{"Content-Type": "application/json"}),
                                    envelope(b"cloud-run"), bridge.port)
        return status, json.loads(answer).get("error") if answer else None

    try:
        invoker = stripped(mint({"email": "invoker@other.iam.gserviceaccount.com"}))
        forged = stripped(mint(sign=False))
        push_token = stripped(mint())
        cases = [
            ("the attack (Cloud Run checked only X-Serverless-Authorization)",
             {"X-Serverless-Authorization": f"Bearer {invoker}", "Authorization": f"Bearer {forged}"},
             (401, "unverified_signature_removed")),
            ("the invoker's token alone: the allow-list applies to the header Cloud Run verified",
             {"X-Serverless-Authorization": f"Bearer {invoker}"}, (403, "email_not_allowed")),
            ("the push token in X-Serverless-Authorization, the application's Authorization beside it",
             {"X-Serverless-Authorization": f"Bearer {push_token}", "Authorization": "Basic dXNlcjpwYXNz"},
             (204, None)),
            ("the push token in Authorization (what Pub/Sub sends)",
             {"Authorization": f"Bearer {push_token}"}, (204, None)),
        ]
        for name, headers, expected in cases:
            answer = send(headers)
            check(answer == expected, f"{name}: answered {answer[0]} {answer[1] or ''}")
    finally:
        bridge.stop()


def hung_registry(binary, env, log):
    print("\n== schema registry accepts and never answers; 10 Avro deliveries at once")
    bridge = Process(binary, dict(env, KAFKA_VALUE_FORMAT="avro", SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{silent_listener()}"), log)
    try:
        started = time.time()
        times = []

        def one(_):
            status, _ = push(bridge, envelope(b"avro"), timeout=60)
            times.append(time.time() - started)
            return status

        with futures.ThreadPoolExecutor(10) as pool:
            statuses = set(pool.map(one, range(10)))
        check(statuses == {503} and max(times) < 8,
              f"answered {statuses} at {min(times):.1f}–{max(times):.1f} s (before the fix: 5, 10, … 50 s)")

        print("\n== 40 clients send 1 MiB Avro deliveries and hang up while the registry hangs")
        body = envelope(os.urandom(768 * 1024))
        socks = []
        with Peak(bridge) as peak:
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", bridge.port))
                try:
                    s.sendall(head_bytes("POST", "/", {"Authorization": f"Bearer {mint()}", "Content-Length": str(len(body))}) + body)
                except OSError:
                    pass
                socks.append(s)
            time.sleep(1)
            held = bridge.metric("pubsub_kafka_bridge_inflight_bytes")
            for s in socks:
                s.close()
            time.sleep(0.5)
            after = bridge.metric("pubsub_kafka_bridge_inflight_bytes")
            requests = bridge.metric("pubsub_kafka_bridge_inflight_requests")
        check(held >= 30 * MIB and after == 0 and requests == 0,
              f"in-flight {held / MIB:.1f} MiB while they wait → {after} bytes half a second after they left "
              f"(the registry timeout is 5 s); peak RSS {peak.peak / MIB:.0f} MiB")
    finally:
        bridge.stop()


def record_limits(binary, env, log):
    print("\n== event times outside Kafka's range, deliveryAttempt beyond int32, and JSON no consumer "
          "parses alike (KAFKA_JSON_EMBED_DATA)")
    bridge = Process(binary, dict(env, KAFKA_VALUE_FORMAT="json", KAFKA_JSON_EMBED_DATA="true",
                                  KAFKA_TIMESTAMP_ATTRIBUTE="event_time"), log)
    try:
        for time_value in ["-1", "1969-12-31T23:59:59.999Z", "253402300800000", "9223372036854775807"]:
            status, answer = push(bridge, envelope(b"{}", {"event_time": time_value}))
            code = json.loads(answer or b"{}").get("error")
            check(status == 400 and code == "timestamp_out_of_range",
                  f"event_time {time_value}: {status} {code} (before the fix: 204, written at -1, "
                  "a year-10000 time or the current time)")
        body = json.loads(envelope(b"{}"))
        body["deliveryAttempt"] = 2**31
        status, answer = push(bridge, json.dumps(body).encode())
        check(status == 400, f"deliveryAttempt 2^31: {status} {answer[:80]!r} (before the fix: 204, Avro wrote -2^31)")
        payloads = {
            "10 MB of '['": b"[" * (10 * 1000 * 1000),
            "50,000-deep nesting": b"[" * 50_000 + b"]" * 50_000,
            "repeated keys": b'{"amount":1,' * 1000 + b'"amount":2}',
            "1 MiB of valid objects": b"[" + b",".join(b'{"id":%d,"tags":["a","b"]}' % i for i in range(40_000)) + b"]",
        }
        for name, payload in payloads.items():
            cpu = bridge.cpu()
            with Peak(bridge) as peak:
                status, _ = push(bridge, envelope(payload), timeout=60)
            # 422: the broker's own record size limit (the bridge held either way).
            check(status in (204, 422), f"{name}: {status}, bridge CPU {(bridge.cpu() - cpu) * 1000:.0f} ms for the "
                                 f"{len(payload) / MIB:.1f} MiB delivery, RSS +{peak.growth_mib():.1f} MiB "
                                 "(written as base64 unless embeddable: tests/formats.rs reads it back)")
    finally:
        bridge.stop()


def bounded_echoes(bridge):
    print("\n== a 60 KB method and a 40 KB key id")
    status, _, body = request("X" * 60_000, "/", port=bridge.port)
    check(len(body) < 1024, f"method: answered {status} with a {len(body)}-byte body")
    status, _, body = request("POST", "/", {"Authorization": f"Bearer {mint(kid='k' * 40_000)}"}, b"{}", bridge.port)
    check(status in (401, 431) and len(body) < 1024, f"key id: answered {status} with a {len(body)}-byte body")
    longest = max((len(line) for line in open(bridge.log, "rb")), default=0)
    check(longest < 4096, f"longest log line so far: {longest} bytes")


def wide_heads(bridge):
    print("\n== heads: Pub/Sub's largest unwrapped push (100 attributes of 256 + 1,024 bytes as headers) whole and cut;"
          " heads past the limits; a repeated metadata header; half a head pipelined behind a request")
    attributes = {f"{i:03d}-" + "k" * 252: chr(33 + i % 94) * 1024 for i in range(100)}

    def unwrapped(message_id, extra=None, metadata=None):
        headers = {"Authorization": f"Bearer {mint()}", "x-goog-pubsub-message-id": message_id,
                   "x-goog-pubsub-publish-time": "2026-12-05T00:00:00Z",
                   "x-goog-pubsub-subscription-name": "projects/p/subscriptions/attacks",
                   "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                   "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1",
                   **attributes, **(extra or {}), "Content-Length": "4"}
        return head_bytes("POST", "/", headers).replace(b"\r\n\r\n", (metadata or b"") + b"\r\n\r\n", 1) + b"data"

    def send(data, segment):
        with socket.create_connection(("127.0.0.1", bridge.port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(data), segment):
                s.sendall(data[i:i + segment])
            status, _, body = read_response(s, 60)
            return status, body

    push = unwrapped("wide")
    for segment in (len(push), 1400, 1):
        cpu, started = bridge.cpu(), time.time()
        status, body = send(unwrapped(f"wide-{segment}"), segment)
        check(status == 204, f"{len(push) - 4:,}-byte head in {segment:,}-byte segments: {status} {body[:60]!r} "
                             f"in {time.time() - started:.2f} s, bridge CPU {bridge.cpu() - cpu:.2f} s")
    refused_before = bridge.metric('pubsub_kafka_bridge_deliveries_total{status="431"}')
    over = unwrapped("over", {"x-pad": "p" * (192 * 1024 - len(push) + 4)})
    statuses = {send(over, segment)[0] for segment in (len(over), 1400, 1)}
    many = unwrapped("many", {f"x-field-{i}": "f" for i in range(60)})
    statuses |= {send(many, segment)[0] for segment in (len(many), 1)}
    counted = bridge.metric('pubsub_kafka_bridge_deliveries_total{status="431"}') - refused_before
    logged = sum(b"head_too_large" in line for line in open(bridge.log, "rb"))
    check(statuses == {431} and counted == 5 and logged >= 5,
          f"a head over 192 KiB, or over 160 fields, whole or in 1,400- or 1-byte segments: {statuses}, "
          f"{counted} counted in /metrics, {logged} logged")
    status, body = send(unwrapped("twice", metadata=b"\r\nx-goog-pubsub-message-id: forged"), 1 << 20)
    check(status == 400 and b"duplicate_metadata_header" in body, f"a repeated message-id header: {status} {body[:70]!r}")
    s = socket.create_connection(("127.0.0.1", bridge.port))
    started = time.time()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
    closed = closed_by_server(s, 10)
    s.close()
    check(closed and time.time() - started < 4,
          f"half a head behind a request in one write: closed after {time.time() - started:.1f} s (head timeout 2 s)")


def refused_settings(binary, env):
    print("\n== insecure or contradictory settings refuse to start")
    cases = {
        "no allow-list": ({k: v for k, v in env.items() if k != "OIDC_ALLOWED_EMAILS"}, "OIDC_ALLOWED_EMAILS"),
        "allow-list and allow-any": (dict(env, OIDC_ALLOW_ANY_EMAIL="true"), "OIDC_ALLOW_ANY_EMAIL"),
        "disabled beside an audience": (dict(env, OIDC_DISABLED="true"), "OIDC_DISABLED"),
        "budget below one body": (dict(env, MAX_INFLIGHT_BYTES="1048576"), "MAX_INFLIGHT_BYTES"),
        "attribute prefix in pubsub.": (dict(env, KAFKA_ATTRIBUTE_HEADER_PREFIX="pubsub."), "KAFKA_ATTRIBUTE_HEADER_PREFIX"),
    }
    for name, (case_env, variable) in cases.items():
        done = subprocess.run([binary], env=dict(case_env, PORT=str(free_port())), capture_output=True, timeout=20)
        output = (done.stdout + done.stderr).decode()
        check(done.returncode != 0 and variable in output, f"{name}: exit {done.returncode}, names {variable}")


def main():
    binary = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    work = pathlib.Path(tempfile.mkdtemp(prefix="attacks-"))
    kafka_port = free_port()
    broker = f"127.0.0.1:{kafka_port}"
    tansu = subprocess.Popen(["tansu", "broker", "--listener-url", f"tcp://{broker}", "--advertised-listener-url",
                              f"tcp://{broker}", "--storage-engine", "memory://tansu/"], cwd=work,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if subprocess.run(["tansu", "topic", "create", "attacks", "--broker", f"tcp://{broker}", "--partitions", "1"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        jwks_port = start_server(Jwks)
        env = {
            "PATH": os.environ.get("PATH", ""),
            # The Cloud Run shape (1 vCPU, the Terraform default): one thread, current-thread runtime.
            "TOKIO_WORKER_THREADS": os.environ.get("TOKIO_WORKER_THREADS", "1"),
            **({"MALLOC_ARENA_MAX": os.environ["MALLOC_ARENA_MAX"]} if "MALLOC_ARENA_MAX" in os.environ else {}),
            "KAFKA_BOOTSTRAP_SERVERS": broker, "KAFKA_TOPIC": "attacks",
            "OIDC_AUDIENCE": AUDIENCE, "OIDC_ALLOWED_EMAILS": PUSH_EMAIL,
            "OIDC_JWKS_URL": f"http://127.0.0.1:{jwks_port}/certs",
            "HTTP_HEADER_READ_TIMEOUT_MS": "2000", "HTTP_BODY_IDLE_TIMEOUT_MS": "2000", "HTTP_BODY_TIMEOUT_MS": "6000",
            "MAX_INFLIGHT_BYTES": str(BUDGET_256_MIB_CONTAINER), "KAFKA_PRODUCE_TIMEOUT_MS": "5000",
        }
        refused_settings(binary, env)
        bridge = Process(binary, env, work / "bridge.log")
        print(f"bridge up: RSS {bridge.rss() / MIB:.1f} MiB")
        try:
            idle_connections(bridge)
            stalled_body(bridge)
            unauthenticated_uploads(bridge)
            tiny_chunks(bridge)
            h2_streams(bridge)
            forged_tokens(bridge)
            long_lived_tokens(bridge)
            other_accounts_flood(bridge)
            bounded_echoes(bridge)
            wide_heads(bridge)
            kafka_stalled(bridge, tansu)
            hung_jwks(bridge)
            print(f"\nbridge RSS at the end: {bridge.rss() / MIB:.1f} MiB")
        finally:
            bridge.stop()
        cloud_run_headers(binary, env, work / "bridge-cloud-run.log")
        hung_registry(binary, env, work / "bridge-avro.log")
        record_limits(binary, env, work / "bridge-json.log")
        silent_broker(binary, env, work)
    finally:
        tansu.send_signal(signal.SIGCONT)
        tansu.kill()
    if FAILURES:
        print(f"\n{len(FAILURES)} attack(s) not resisted:\n  " + "\n  ".join(FAILURES))
        sys.exit(1)
    print("\nevery attack resisted")


if __name__ == "__main__":
    main()
