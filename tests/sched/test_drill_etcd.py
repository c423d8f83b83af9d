#!/usr/bin/env python3
"""Restore drill of an etcd schedule against a real etcd 3.4 (Debian etcd-server): the drill
restores the snapshot with etcdctl snapshot restore into a new data directory and starts a
throw-away etcd on it on loopback; a damaged stored snapshot fails the drill, a good one
passes (drill_lib.py). SKIP (77) without etcd, a failure under CI=true."""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "source"))
import drill_lib  # noqa: E402
import etcdtest  # noqa: E402

etcdtest.need_etcd()
tmp = tempfile.mkdtemp(prefix="cairn-drill-etcd-")
e = etcdtest.Etcd(os.path.join(tmp, "etcd")).start()
try:
    e.put_many([("drill/k%04d" % i, "v%d" % i) for i in range(2000)])
    drill_lib.run_drill_course(tmp, "etcd://127.0.0.1:%d" % e.client,
                               probe_says="etcd started on the restored data: 2000 keys")
finally:
    e.stop()
drill_lib.finish(tmp)
