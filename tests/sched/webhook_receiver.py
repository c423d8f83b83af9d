"""A webhook receiver for the cairnd tests: answers POSTs with the statuses given (then 200),
appends each request (JSON body and attempt number) to a JSON-lines file, and writes its port
to a file once listening. Usage: webhook_receiver.py PORTFILE LOGFILE [STATUS...]"""
import http.server
import json
import sys

port_file, log_file = sys.argv[1], sys.argv[2]
statuses = [int(s) for s in sys.argv[3:]]
count = [0]


class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        count[0] += 1
        status = statuses[count[0] - 1] if count[0] <= len(statuses) else 200
        with open(log_file, "a") as f:
            f.write(json.dumps({"attempt": count[0], "status": status, "path": self.path,
                                "type": self.headers.get("Content-Type"),
                                "body": json.loads(body)}) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


srv = http.server.HTTPServer(("127.0.0.1", 0), H)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os  # noqa: E402

os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
