#!/usr/bin/env python3
"""Restore drill of an InfluxDB schedule against a real influxd 1.6 (Debian's): the drill
restores the legacy layout (`cairn restore --into`), runs `influxd restore` per database into
new meta and data directories and starts a throw-away influxd on them, which must list every
database; a damaged stored shard fails the drill, a good backup passes (drill_lib.py). SKIP
(77) without influxd, a failure under CI=true."""
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "influx"))
import drill_lib  # noqa: E402
import influx  # noqa: E402
import skips  # noqa: E402

influx.need_influxd()
if shutil.which("influx") is None:
    skips.missing("influx (Debian package influxdb-client)")
tmp = tempfile.mkdtemp(prefix="cairn-drill-influx-")
a = influx.Influxd(os.path.join(tmp, "a"))
try:
    a.start()
    influx.populate(a)
    a.wait_tsm()
    drill_lib.run_drill_course(tmp, "influxdb://" + a.influx_addr,
                               probe_says="influxd restored database other: 1 series")
finally:
    a.stop()
drill_lib.finish(tmp)
