"""cairnd serve under abuse: malformed requests are closed with a log line naming the peer,
hundreds of half-open connections are cut at the idle deadline while valid requests keep being
answered, connections beyond --max-conns are refused at once, SIGTERM stops it cleanly."""
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from influx import Cairnd, probe, probe_port, request  # noqa: E402

failures = []


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg)
    if not cond:
        failures.append(msg)


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def wait_log(path, needle, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        with open(path) as f:
            if needle in f.read():
                return True
        time.sleep(0.05)
    return False


def main():
    tmp = tempfile.mkdtemp(prefix="cairn-robust-")
    data = os.path.join(tmp, "data")
    for rp, sid in (("autogen", 1), ("autogen", 2), ("week", 3)):
        d = os.path.join(data, "db1", rp, str(sid))
        os.makedirs(d)
        with open(os.path.join(d, "000000001-000000001.tsm"), "wb") as f:
            f.write(b"\x16\xd1\x16\xd1\x01" + bytes(range(256)) * 40)
    log = os.path.join(tmp, "cairnd.log")
    c = Cairnd(data, extra=["--max-conns", "350", "--idle-timeout", "2000"], log=log)
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

        # 300 half-open connections: nothing, the mux byte only, or a partial JSON.
        t0 = time.time()
        idle = []
        for i in range(300):
            s = connect(c.addr)
            s.sendall([b"", b"\x03", b'\x03\x00{"Type":0,"Sh'][i % 3])
            idle.append(s)
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
        # of 80 more at least 30 must be closed straight away.
        extra = [connect(c.addr) for _ in range(80)]
        time.sleep(0.5)
        readable, _, _ = select.select(extra, [], [], 0)
        refused = 0
        for s in readable:
            try:
                if s.recv(1) == b"":
                    refused += 1
            except OSError:
                refused += 1
        check(refused >= 30, "connections beyond --max-conns refused (%d of 80)" % refused)
        check(wait_log(log, "refused: 350 connections open"), "refusal logged")
        for s in extra:
            s.close()
        # The idle deadline (2 s) closes every half-open connection.
        closed = 0
        for s in idle:
            s.settimeout(max(0.1, 8 - (time.time() - t0)))
            try:
                if s.recv(1) == b"":
                    closed += 1
            except OSError:
                closed += 1
            s.close()
        check(closed == 300, "idle deadline closed all 300 half-open connections (%d)" % closed)
        check(wait_log(log, "deadline exceeded") or wait_log(log, "no progress"),
              "deadline logged")
        out = probe(c.addr, request(3, BackupDatabase="db1"))
        check(out.startswith(b'{"Paths":['), "serving after the flood")
        c.stop()
        check(True, "SIGTERM: clean exit 0")
    finally:
        try:
            c.stop()
        except Exception as e:
            print("cleanup: %s" % e)
    if failures:
        print("--- cairnd log tail ---")
        print(open(log).read()[-3000:])
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
