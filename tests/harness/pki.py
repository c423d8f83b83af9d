"""A throwaway PKI for the TLS tests, made with the openssl command: a CA, a server certificate
for 127.0.0.1 (also usable as a client: etcd's gateway dials its own gRPC port with it) and a
client certificate, all EC P-256, valid two days. need_openssl() skips (77) without openssl,
a failure under CI=true."""
import os
import shutil
import subprocess

import skips


def need_openssl():
    if shutil.which("openssl") is None:
        skips.missing("openssl (Debian package openssl) is not installed")


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(d, name="ca", cn="cairn test CA"):
    """A self-signed CA alone, d/NAME.crt and d/NAME.key (a second one is the "wrong CA")."""
    os.makedirs(d, exist_ok=True)
    openssl("req", "-x509", *EC, "-keyout", name + ".key", "-out", name + ".crt", "-days", "2",
            "-subj", "/CN=" + cn, cwd=d)
    return os.path.join(d, name + ".crt")


def make_pki(d):
    """Paths: ca, cert and key (the server's), client_cert and client_key."""
    make_ca(d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\n"
                                 "extendedKeyUsage=serverAuth,clientAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        openssl("req", *EC, "-keyout", name + ".key", "-out", name + ".csr", "-subj",
                "/CN=cairn-" + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile",
                name + ".ext", cwd=d)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return {"ca": p("ca.crt"), "cert": p("server.crt"), "key": p("server.key"),
            "client_cert": p("client.crt"), "client_key": p("client.key")}
