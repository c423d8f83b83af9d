"""cairnd serve under abuse: malformed requests are closed with a log line naming the peer,
valid requests keep being answered beside hundreds of half-open connections, connections beyond
--max-conns are refused at once, hundreds of half-open connections are cut at the idle deadline,
SIGTERM stops it cleanly.

Nothing here depends on speed (the test also runs under TSan on loaded machines). The first
server holds half-open connections for an hour (--idle-timeout), so they are certainly still
open while the concurrent requests and the connections beyond --max-conns arrive; a refusal is
awaited for up to WAIT seconds, far less than the hour an accepted connection would be held. A
second server with a 2 s idle deadline shows the cut: every half-open connection must be closed
by the server (EOF or reset, never our own timeout) within WAIT, which without an idle deadline
could not happen."""
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from influx import WAIT, Cairnd, probe, probe_port, request  # noqa: E402

failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg)
    if not cond:
        failures.append(msg)


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=WAIT)


def wait_log(path, needle, timeout=WAIT):
    end = time.time() + timeout
    while time.time() < end:
        with open(path) as f:
            if needle in f.read():
                return True
        time.sleep(0.05)
    return False


def wait_closed(socks, want, deadline):
    """Wait until want of socks are closed by the server (EOF or reset) or the deadline
    passes (one look at least); our own timeout never counts as a close. Returns the closed
    ones."""
    closed, left_open = [], {s.fileno(): s for s in socks}
    while True:
        left = max(0.0, deadline - time.time())
        p = select.poll()
        for fd in left_open:
            p.register(fd, select.POLLIN)
        for fd, _ in p.poll(min(left, 1.0) * 1000):
            s = left_open[fd]
            try:
                gone = s.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                gone = True
            if gone:
                closed.append(s)
                del left_open[fd]
        if len(closed) >= want or not left_open or left <= 0:
            return closed


def half_open(addr, n):
    """n connections sending nothing, the mux byte only, or a partial JSON."""
    socks = []
    for i in range(n):
        s = connect(addr)
        s.sendall([b"", b"\x03", b'\x03\x00{"Type":0,"Sh'][i % 3])
        socks.append(s)
    return socks


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-robust-")
    data = os.path.join(tmp, "data")
    for rp, sid in (("autogen", 1), ("autogen", 2), ("week", 3)):
        d = os.path.join(data, "db1", rp, str(sid))
        os.makedirs(d)
        with open(os.path.join(d, "000000001-000000001.tsm"), "wb") as f:
            f.write(b"\x16\xd1\x16\xd1\x01" + bytes(range(256)) * 40)
    log = os.path.join(tmp, "cairnd.log")
    # Half-open connections are held for an hour here: longer than any wait below. All come
    # from one address, slow ones are not dropped (--slow-rate 0: the refusal at --max-conns
    # is tested) and uploads are allowed (their parsers are tested).
    c = Cairnd(data, extra=["--max-conns", "350", "--max-conns-per-addr", "350", "--slow-rate",
                            "0", "--idle-timeout", "3600000", "--allow-restore",
                            "--allow-overwrite"], log=log)
    log2 = os.path.join(tmp, "cairnd-idle.log")
    c2 = Cairnd(data, extra=["--max-conns", "350", "--max-conns-per-addr", "350",
                             "--idle-timeout", "2000"], log=log2)
    try:
        c.start()
        meta = probe(c.addr, request(1))
        check(meta[:8] == bytes.fromhex("0000000059590101"), "derived metadata served")
        check(probe(c.addr, request(3)) ==
              b'{"Paths":["db1/autogen/1","db1/autogen/2","db1/week/3"]}\n', "derived paths")

        big = b'\x03\x00{"BackupDatabase":"' + b"x" * 70000 + b'"}\n'
        cases = [
            ("bad JSON", b"\x03\x00{bad}\n", "read request"),
            ("not an object", b"\x03\x00[1,2]\n", "invalid character"),
            ("wrong field type", b'\x03\x00{"ShardID":"1"}\n', "cannot unmarshal string"),
            ("Type out of range", b'\x03\x00{"Type":300}\n', "cannot unmarshal number"),
            ("empty Since", b'\x03\x00{"Since":""}\n', "parsing time"),
            ("oversized JSON", big, "exceeds"),
            ("wrong mux byte", b"\x07\x00{}\n", "handler not registered: 7"),
            ("unknown type", b'\x03\x09{"Type":9}\n', "request type unknown: 9"),
            ("series file type", b'\x03\x02{"Type":2}\n', "request type unknown: 2"),
            ("1.4 framing", b'\x03{"Type":1}\n', "read request"),
            ("EOF before JSON", b"\x03\x00", "EOF"),
            ("huge upload", b'\x03\x06{"UploadSize":99999999999}\n', "upload size"),
            ("negative upload", b'\x03\x06{"UploadSize":-1}\n', "upload size"),
            ("truncated upload", b'\x03\x06{"UploadSize":100}\n\x08\x01', "read upload"),
            ("garbage blob", b'\x03\x06{"UploadSize":4}\n\xff\xff\xff\xff',
             "metastore upload refused"),
            ("export, missing shard", request(5, ShardID=99, ExportStart="2020-01-01T00:00:00Z",
                                              ExportEnd="2020-01-02T00:00:00Z"),
             "shard 99 doesn't exist"),
            ("export, start after end", request(5, ShardID=1, ExportStart="2020-01-02T00:00:00Z",
                                                ExportEnd="2020-01-01T00:00:00Z"),
             "export window starts"),
            ("export, bad time", b'\x03\x05{"ExportEnd":"noon"}\n', "parsing time"),
            ("export, damaged TSM", request(5, ShardID=1, ExportStart="2020-01-01T00:00:00Z",
                                            ExportEnd="2020-01-02T00:00:00Z"), "TSM file"),
            ("shard upload, bad tar", b"\x03\x07" + (1).to_bytes(8, "big") + b"nonsense" * 100,
             "shard upload"),
            ("shard upload, missing shard", b"\x03\x07" + (77).to_bytes(8, "big"),
             "shard not found: 77"),
        ]
        for name, payload, needle in cases:
            out, port = probe_port(c.addr, payload)
            if name == "garbage blob":
                check(out == bytes.fromhex("0000000059590101") + bytes(8),
                      name + ": empty ID map, as influxd")
            else:
                check(out == b"", name + ": closed without reply")
            check(wait_log(log, "127.0.0.1:%d: " % port) and wait_log(log, needle),
                  name + ": log line with peer :%d and %r" % (port, needle))
        check(probe(c.addr, request(0, ShardID=1))[-1024:] == bytes(1024),
              "still serving after malformed requests")

        # 300 half-open connections: nothing, the mux byte only, or a partial JSON. They are
        # accepted before the requests below (the listen backlog is FIFO) and held open.
        idle = half_open(c.addr, 300)
        results = []

        def worker():
            results.append(probe(c.addr, request(0, ShardID=2)))

        threads = [threading.Thread(target=worker) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        good = sum(1 for r in results if len(r) > 1024 and r[-1024:] == bytes(1024))
        check(good == 40, "40 concurrent shard backups answered beside 300 half-open (%d)" % good)
        # Beyond --max-conns (350): refused at once, with a log line. 300 are held open, so
        # of 80 more at least 30 must be closed straight away (the accepted ones are held for
        # the hour).
        extra = [connect(c.addr) for _ in range(80)]
        refused = len(wait_closed(extra, 30, time.time() + WAIT))
        check(refused >= 30, "connections beyond --max-conns refused (%d of 80)" % refused)
        check(wait_log(log, "refused: 350 connections open"), "refusal logged")
        still = len(wait_closed(idle, 1, time.time()))
        check(still == 0, "the 300 half-open connections were held meanwhile (%d closed)" % still)
        for s in extra + idle:
            s.close()
        out = probe(c.addr, request(3, BackupDatabase="db1"))
        check(out.startswith(b'{"Paths":['), "serving after the flood")
        c.stop()
        check(True, "SIGTERM: clean exit 0")

        # The idle deadline (2 s) closes every half-open connection: the server closes each
        # (we never time out ourselves) and logs why, naming the peer.
        c2.start()
        idle = half_open(c2.addr, 300)
        ports = [s.getsockname()[1] for s in idle]
        closed = len(wait_closed(idle, 300, time.time() + WAIT))
        check(closed == 300, "idle deadline closed all 300 half-open connections (%d)" % closed)
        for s in idle:
            s.close()
        check(wait_log(log2, "no progress") or wait_log(log2, "deadline exceeded"),
              "deadline logged")
        with open(log2) as f:
            lines = [ln for ln in f if "no progress" in ln or "deadline exceeded" in ln]
        named = sum(1 for p in ports if any("127.0.0.1:%d: " % p in ln for ln in lines))
        check(named == 300, "the deadline logged for each of the 300 peers (%d)" % named)
        out = probe(c2.addr, request(3, BackupDatabase="db1"))
        check(out.startswith(b'{"Paths":['), "serving after the idle cut")
        c2.stop()
        check(True, "SIGTERM after the idle cut: clean exit 0")
    finally:
        for srv in (c, c2):
            try:
                srv.stop()
            except Exception as e:
                print("cleanup: %s" % e)
    if failures:
        for path in (log, log2):
            if os.path.exists(path):
                print("--- %s tail ---" % os.path.basename(path))
                print(open(path).read()[-3000:])
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
