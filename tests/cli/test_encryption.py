"""Encrypted repositories through the cairn CLI (docs/FORMAT.md "Repositories"), on file storage
and on a real s3rver:
- cairn key generate (mode 0600, never overwrites), cairn init, cairn key add/list/passwd/remove;
- `cairn put` of files containing a marker string and of a raft snapshot archive, `cairn backup`
  of a tree; then every stored object's bytes are searched for the marker, every file name and
  the SHA-256 (hex and raw) of every plaintext file: none is found;
- `cairn get` / `cairn restore` give back the original bytes (the snapshot archive byte for
  byte); a wrong key is exit 4 with nothing written; a key file others can read is exit 2;
  CAIRN_KEY_FILE, CAIRN_PASSWORD_FILE and CAIRN_PASSWORD_COMMAND work;
- tampering with stored objects (a byte flipped with XOR, a cut, two chunks swapped, objects
  swapped between backups, an older MANIFEST of a reused name replayed) is exit 3 naming the
  object, and nothing is written to the target;
- an independent decryptor written from docs/FORMAT.md alone (Python `cryptography`) opens the
  key object, checks the config's MAC, decrypts a MANIFEST and the files to the original bytes
  and checks the keyed hashes; a password key stretched with Argon2id (--kdf argon2id) is
  opened by it too (python3-argon2)."""
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reliability"))
from rel import check, cairn, run, tmpdir, finish, tree_bytes, with_s3rver, CAIRN  # noqa: E402
import skips  # noqa: E402

from cairn_crypto import aead_open, b64 as base64, hkdf, key_file_wrap, unwrap  # noqa: E402
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: E402
try:
    from argon2.low_level import Type as Argon2Type, hash_secret_raw
except ImportError:
    hash_secret_raw = None

T = tmpdir("cairn-enc-")
MARKER = b"SECRET-TOKEN-5d1c9e"


# ---- the independent decryptor (docs/FORMAT.md only) ----

class Repo:
    """Reads a repository through a get(path) -> bytes function (path relative to it)."""

    def __init__(self, get, key=None, password=None):
        self.get = get
        cfg = json.loads(get(".cairn/config"))
        assert cfg["version"] == 1 and cfg["encryption"] == "aes-256-gcm", cfg
        self.id = bytes.fromhex(cfg["id"])
        self.chunk = cfg["chunk_size"]
        self.master = None
        for name in get.keys():
            k = json.loads(get(".cairn/" + name))
            salt = base64(k["salt"])
            if k["type"] == "key-file" and key is not None:
                w = key_file_wrap(key, k)
            elif k["type"] == "password" and password is not None and k["kdf"] == "argon2id":
                a = k["argon2id"]
                w = hash_secret_raw(password, salt, a["t"], a["m"], a["p"], 32, Argon2Type.ID)
            elif k["type"] == "password" and password is not None:
                assert k["kdf"] == "scrypt", k["kdf"]
                s = k["scrypt"]
                w = Scrypt(salt=salt, length=32, n=s["N"], r=s["r"], p=s["p"]).derive(password)
            else:
                continue
            try:
                self.master = unwrap(k, w)
                break
            except Exception:
                continue
        assert self.master is not None, "no key object opens"
        self.k_data = hkdf(self.master, self.id, b"cairn data v1")
        self.k_config = hkdf(self.master, self.id, b"cairn config mac v1")
        self.k_hash = hkdf(self.master, self.id, b"cairn content hash v1")
        body = dict(cfg)
        mac = body.pop("mac")
        canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        assert hmac.compare_digest(hmac.new(self.k_config, canon, "sha256").hexdigest(), mac)

    def decrypt(self, backup, file, bid=bytes(16)):
        return aead_open(self.k_data, self.id, self.chunk, backup, file,
                         self.get("%s/%s" % (backup, file)), bid)

    def manifest(self, backup):
        """The MANIFEST as (header, {name: entry}, meta); a split one's parts decrypted and
        checked against their keyed hashes (docs/STORAGE.md, "Split MANIFEST")."""
        m = json.loads(self.decrypt(backup, "MANIFEST"))
        if m["version"] == 1:
            return m, {e["name"]: e for e in m["files"]}, m["meta"]
        bid = bytes.fromhex(m["backup_id"])
        body = b""
        for p in m["parts"]:
            part = self.decrypt(backup, p["name"], bid)
            assert hmac.new(self.k_hash, part, "sha256").hexdigest() == p["sha256"]
            body += part
        lines = body.rstrip(b"\n").split(b"\n")
        files = {}
        for ln in lines[:-1]:
            f = ln.decode().split(" ")
            files[f[0]] = {"name": f[0], "size": int(f[1]), "sha256": f[2], "compression": f[3],
                           "logical_size": int(f[4]), "logical_sha256": f[5]}
        return m, files, json.loads(lines[-1])

    def file(self, backup, entry, m):
        bid = bytes.fromhex(m["backup_id"])
        stored = self.decrypt(backup, entry["name"], bid)
        assert hmac.new(self.k_hash, stored, "sha256").hexdigest() == entry["sha256"]
        if entry["compression"] == "zstd":
            stored = subprocess.run(["zstd", "-dc"], input=stored, stdout=subprocess.PIPE,
                                    check=True).stdout
        assert hmac.new(self.k_hash, stored, "sha256").hexdigest() == entry["logical_sha256"]
        return stored

    def path_files(self, backup):
        """{path: bytes} of every regular file of a local-path backup."""
        m, files, meta = self.manifest(backup)
        tree = meta["tree"]
        if "entries_file" in tree:
            ents = [json.loads(x) for x in
                    self.file(backup, tree["entries_file"], m).decode().splitlines()]
        else:
            ents = tree["entries"]
        return {e["path"]: self.file(backup, files[e["file"]], m) for e in ents
                if e["type"] == "file"}


class Store:
    """The stored objects of a location as bytes: a file root, or s3rver's data directory."""

    def __init__(self, root, s3=False):
        self.root, self.s3 = root, s3

    def _path(self, rel):
        return os.path.join(self.root, rel) + ("._S3rver_object" if self.s3 else "")

    def __call__(self, rel):
        with open(self._path(rel), "rb") as f:
            return f.read()

    def keys(self):
        d = os.path.join(self.root, ".cairn")
        suf = "._S3rver_object" if self.s3 else ""
        return sorted(n[:len(n) - len(suf)] for n in os.listdir(d)
                      if n.startswith("key-") and n.endswith(suf))

    def objects(self):
        """(relative name, bytes) of every stored object."""
        for r, _, files in os.walk(self.root):
            for n in files:
                if self.s3 and not n.endswith("._S3rver_object"):
                    continue
                p = os.path.join(r, n)
                with open(p, "rb") as f:
                    yield os.path.relpath(p, self.root), f.read()


# ---- the CLI ----

def make_tree(d, tag):
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    files = {}
    for i, size in enumerate([10, 5000, 300000]):
        name = "payroll-%s-%d.txt" % (tag, i) if i < 2 else os.path.join("sub", "vault-%s.bin" % tag)
        body = (MARKER + b" line %d of %s\n" % (i, tag.encode())) * (size // 40 + 1)
        if i == 2:
            body += os.urandom(100000) + MARKER
        with open(os.path.join(d, name), "wb") as f:
            f.write(body)
        files[name] = body
    return files


def snapshot_archive(path):
    state = os.path.join(T, "state.bin")
    with open(state, "wb") as f:
        f.write((MARKER + b" raft state\n") * 2000)
    rc, _, err, _ = cairn("snapshot", "save", state, path, "--index", "38", "--term", "3")
    check(rc == 0, "cairn snapshot save: %s" % err)
    with open(path, "rb") as f:
        return f.read()


def scan(store, plaintexts, names, where):
    """No marker, name or plaintext hash in any stored object."""
    needles = [MARKER] + [n.encode() for n in names]
    for body in plaintexts:
        d = hashlib.sha256(body).digest()
        needles += [d, d.hex().encode()]
    n = found = 0
    for rel, data in store.objects():
        n += 1
        for x in needles:
            if x in data:
                found += 1
                print("found %r in %s" % (x[:40], rel))
    check(n >= 8, "%s: %d stored objects scanned" % (where, n))
    check(found == 0, "%s: no marker, file name or plaintext SHA-256 in any stored object" % where)


def round_trip(url, store, where):
    key = os.path.join(T, "k-%s.key" % where)
    rc, out, err, _ = cairn("key", "generate", key)
    check(rc == 0 and os.stat(key).st_mode & 0o777 == 0o600, "%s: key generate 0600" % where)
    rc, _, err, _ = cairn("key", "generate", key)
    check(rc == 6, "%s: key generate never overwrites (exit %d)" % (where, rc))
    # --no-dedup: files stored whole, the per-file object format this decryptor reads
    # (the chunk store's Python reader is tests/storage/test_chunk_reader.py).
    rc, out, err, _ = cairn("init", url, "--key-file", key, "--no-dedup", "--json")
    check(rc == 0, "%s: init: %s" % (where, err))
    rc, _, err, _ = cairn("init", url, "--key-file", key)
    check(rc == 6, "%s: a second init is exit 6 (%d)" % (where, rc))

    src = os.path.join(T, "src-" + where)
    files = make_tree(src, where)
    snap_path = os.path.join(T, "raft-%s.snap" % where)
    snap = snapshot_archive(snap_path)
    k = ["--key-file", key]
    rc, _, err, _ = cairn("put", url, "tree", src, "--zstd", *k)
    check(rc == 0, "%s: put tree: %s" % (where, err))
    rc, _, err, _ = cairn("put", url, "plain", src, *k)
    check(rc == 0, "%s: put uncompressed: %s" % (where, err))
    rc, _, err, _ = cairn("put", url, "snap", snap_path, *k)
    check(rc == 0, "%s: put snapshot archive: %s" % (where, err))
    rc, _, err, _ = cairn("backup", "--from", src, "--to", url, "--name", "engine", *k)
    check(rc == 0, "%s: backup through the engine: %s" % (where, err))

    names = list(files) + [os.path.basename(snap_path), "payroll", "vault-"]
    scan(store, list(files.values()) + [snap], names, where)

    # Back byte for byte: get, restore; the snapshot archive as it was.
    for name, how in (("tree", "get"), ("plain", "get"), ("engine", "restore")):
        dst = os.path.join(T, "out-%s-%s" % (where, name))
        args = ([how, url, name, dst] if how == "get" else [how, url, name, "--into", dst]) + k
        rc, _, err, _ = cairn(*args)
        if rc == 0 and tree_bytes(dst) != files:
            print("got", {p: len(v) for p, v in tree_bytes(dst).items()},
                  {p: len(v) for p, v in files.items()})
        check(rc == 0 and tree_bytes(dst) == files,
              "%s: %s %s gives back the original bytes (%s)" % (where, how, name, err.strip()))
    dst = os.path.join(T, "out-%s-snap" % where)
    rc, _, err, _ = cairn("get", url, "snap", dst, *k)
    got = tree_bytes(dst) if rc == 0 else {}
    check(list(got.values()) == [snap], "%s: get gives back the snapshot archive byte for byte" %
          where)
    rc, out, err, _ = cairn("snapshot", "verify", os.path.join(dst, os.listdir(dst)[0])
                            if rc == 0 else snap_path)
    check(rc == 0, "%s: the restored archive verifies: %s" % (where, err))

    # Wrong key: exit 4, nothing written. No key: exit 4.
    bad = os.path.join(T, "bad-%s.key" % where)
    cairn("key", "generate", bad)
    dst = os.path.join(T, "wrong-%s" % where)
    rc, _, err, _ = cairn("get", url, "tree", dst, "--key-file", bad)
    check(rc == 4 and not os.path.exists(dst), "%s: wrong key exit 4, nothing written (%d: %s)" %
          (where, rc, err.strip()))
    rc, _, err, _ = cairn("restore", url, "engine", "--into", dst, "--key-file", bad)
    check(rc == 4 and not os.path.exists(dst), "%s: restore with a wrong key exit 4" % where)
    rc, _, err, _ = cairn("list", url)
    check(rc == 4 and "encrypted" in err, "%s: no key exit 4: %s" % (where, err.strip()))

    # The independent decryptor.
    repo = Repo(store, key=open(key, "rb").read())
    for name in ("tree", "plain", "engine"):
        try:
            got = repo.path_files(name)
        except Exception as e:  # noqa: BLE001 (reported as a failed check)
            print("decryptor: %r" % e)
            got = {}
        check(sorted(got.values()) == sorted(files.values()) and
              {os.path.basename(p) for p in got} == {os.path.basename(p) for p in files},
              "%s: the Python decryptor gives back every file of %s" % (where, name))
    try:
        got = list(repo.path_files("snap").values())
    except Exception as e:  # noqa: BLE001
        print("decryptor: %r" % e)
        got = []
    check(got == [snap], "%s: the Python decryptor gives back the snapshot archive" % where)
    return key, files


def tamper(url, store, key, files):
    """File storage: every change to a stored object is exit 3 naming it, nothing applied."""
    k = ["--key-file", key]
    root = store.root
    victim = None
    _, files_, _ = Repo(store, key=open(key, "rb").read()).manifest("plain")
    for e in files_.values():
        if e["size"] > 200000:
            victim = e["name"]
    check(victim is not None, "a multi-chunk object to tamper with")
    p = os.path.join(root, "plain", victim)
    orig = open(p, "rb").read()
    cl = 65536 + 16

    def put(data):
        os.chmod(p, 0o600)
        with open(p, "wb") as f:
            f.write(data)

    def expect(what, name="plain", obj=None):
        dst = os.path.join(T, "tamper-out")
        shutil.rmtree(dst, ignore_errors=True)
        rc, _, err, _ = cairn("get", url, name, dst, *k)
        check(rc == 3 and (obj or victim) in err and not os.path.exists(dst),
              "%s: exit 3 naming the object, nothing written (%d: %s)" % (what, rc, err.strip()))

    for off in (0, 20, 31, 32, 100, 32 + cl + 5, len(orig) - 1):
        b = bytearray(orig)
        b[off] ^= 0x01
        put(bytes(b))
        expect("byte %d flipped" % off)
    for cut in (32 + cl, len(orig) - 1, 40):
        put(orig[:cut])
        expect("cut at %d" % cut)
    put(orig[:32] + orig[32 + cl:32 + 2 * cl] + orig[32:32 + cl] + orig[32 + 2 * cl:])
    expect("chunks 0 and 1 swapped")
    put(orig[:32 + cl] + orig[32:32 + cl] + orig[32 + cl:])
    expect("chunk 0 repeated")
    # the same file of another backup (same name, same content): another backup id
    put(open(os.path.join(root, "tree", victim), "rb").read())
    expect("object of another backup swapped in")
    put(orig)
    rc, _, err, _ = cairn("verify", url, "plain", *k)
    check(rc == 0, "restored object verifies again: %s" % err)
    # an older MANIFEST of a reused name
    man = os.path.join(root, "plain", "MANIFEST")
    old = open(man, "rb").read()
    rc, _, err, _ = cairn("rm", url, "plain", *k)
    check(rc == 0, "rm plain: %s" % err)
    rc, _, err, _ = cairn("put", url, "plain", os.path.join(T, "reused-src"), *k)
    check(rc == 0, "plain put again: %s" % err)
    os.chmod(man, 0o600)
    with open(man, "wb") as f:
        f.write(old)
    dst = os.path.join(T, "tamper-out")
    shutil.rmtree(dst, ignore_errors=True)
    rc, _, err, _ = cairn("get", url, "plain", dst, *k)
    check(rc == 3 and "plain/" in err and not os.path.exists(dst),
          "older MANIFEST replayed: exit 3, nothing written (%d: %s)" % (rc, err.strip()))
    # MANIFESTs swapped between backups
    a, b = os.path.join(root, "tree", "MANIFEST"), os.path.join(root, "engine", "MANIFEST")
    da, db = open(a, "rb").read(), open(b, "rb").read()
    with open(a, "wb") as f:
        f.write(db)
    rc, _, err, _ = cairn("verify", url, "tree", *k)
    check(rc == 3 and "tree/MANIFEST" in err, "MANIFEST of another backup: exit 3 (%d: %s)" %
          (rc, err.strip()))
    with open(a, "wb") as f:
        f.write(da)


def keys(url, key):
    """key add / list / passwd / remove, the variables, a key file others can read."""
    pw = os.path.join(T, "pw")
    with open(pw, "w") as f:
        f.write("correct horse battery staple\n")
    os.chmod(pw, 0o600)
    rc, out, err, _ = cairn("key", "add", url, "--key-file", key, "--new-password-file", pw,
                            "--json")
    check(rc == 0, "key add password: %s" % err)
    pid = json.loads(out)["id"] if rc == 0 else ""
    env = dict(os.environ, CAIRN_PASSWORD_FILE=pw)
    rc, out, err, _ = run([CAIRN, "list", url, "--json"], env=env)
    check(rc == 0, "CAIRN_PASSWORD_FILE unlocks: %s" % err)
    env = dict(os.environ, CAIRN_PASSWORD_COMMAND="cat " + pw)
    rc, out, err, _ = run([CAIRN, "key", "list", url, "--json"], env=env)
    ks = json.loads(out)["keys"] if rc == 0 else []
    check(len(ks) == 2 and [x["current"] for x in ks if x["id"] == pid] == [True],
          "CAIRN_PASSWORD_COMMAND unlocks; key list shows 2 keys, the current one marked")
    env = dict(os.environ, CAIRN_KEY_FILE=key)
    rc, out, err, _ = run([CAIRN, "key", "remove", url, pid], env=env)
    check(rc == 0, "key remove the password key with CAIRN_KEY_FILE: %s" % err)
    rc, out, err, _ = run([CAIRN, "key", "list", url, "--json"], env=env)
    kid = json.loads(out)["keys"][0]["id"] if rc == 0 else ""
    rc, out, err, _ = run([CAIRN, "key", "remove", url, kid], env=env)
    check(rc == 2, "the last key is never removed (exit %d: %s)" % (rc, err.strip()))
    k2 = os.path.join(T, "k2.key")
    cairn("key", "generate", k2)
    rc, out, err, _ = run([CAIRN, "key", "passwd", url, "--new-key-file", k2], env=env)
    check(rc == 0, "key passwd: %s" % err)
    rc, _, err, _ = cairn("list", url, "--key-file", key)
    check(rc == 4, "the old key no longer opens after passwd (%d)" % rc)
    rc, _, err, _ = cairn("list", url, "--key-file", k2)
    check(rc == 0, "the new key opens: %s" % err)
    os.chmod(k2, 0o644)
    rc, _, err, _ = cairn("list", url, "--key-file", k2)
    check(rc == 2 and "chmod" in err, "a key file others can read: exit 2 (%d: %s)" %
          (rc, err.strip()))
    os.chmod(k2, 0o600)


def argon2id(root):
    """A password key stretched with Argon2id: the key object names it and its parameters, the
    Python decryptor (python3-argon2) opens it and gets the original bytes back."""
    if hash_secret_raw is None:
        skips.missing_part("python3-argon2 not installed (scripts/deps.sh test): the decryptor "
                           "cannot open an Argon2id key")
        return
    url = "file://" + root
    pw = os.path.join(T, "a2.pw")
    with open(pw, "w") as f:
        f.write("argon two passphrase\n")
    os.chmod(pw, 0o600)
    # --no-dedup: the per-file object format the Python decryptor reads
    rc, out, err, _ = cairn("init", url, "--password-file", pw, "--kdf", "argon2id", "--no-dedup",
                            "--json")
    check(rc == 0, "init --kdf argon2id: %s" % err)
    kid = json.loads(out)["key"] if rc == 0 else ""
    k = json.loads(Store(root)(".cairn/key-" + kid)) if rc == 0 else {}
    check(k.get("kdf") == "argon2id" and k.get("argon2id") == {"t": 3, "m": 16384, "p": 1},
          "the key object records argon2id t=3 m=16384 p=1: %s" % k.get("argon2id"))
    src = os.path.join(T, "a2-src")
    os.makedirs(src)
    with open(os.path.join(src, "a.txt"), "wb") as f:
        f.write(MARKER * 1000)
    rc, _, err, _ = cairn("put", url, "a2", src, "--password-file", pw)
    check(rc == 0, "put with the argon2id key: %s" % err)
    try:
        got = Repo(Store(root), password=b"argon two passphrase").path_files("a2")
    except Exception as e:  # noqa: BLE001
        print("decryptor: %r" % e)
        got = {}
    check(got == {"a.txt": MARKER * 1000}, "the Python decryptor opens the Argon2id key")
    bad = os.path.join(T, "a2.bad")
    with open(bad, "w") as f:
        f.write("argon two passphrasE\n")
    os.chmod(bad, 0o600)
    rc, _, err, _ = cairn("list", url, "--password-file", bad)
    check(rc == 4, "a wrong password for the argon2id key: exit 4 (%d: %s)" % (rc, err.strip()))
    rc, _, err, _ = cairn("init", url + "-x", "--password-file", pw, "--kdf", "md5")
    check(rc == 2, "an unknown --kdf: exit 2 (%d)" % rc)


def main():
    if os.system("command -v zstd >/dev/null") != 0:
        skips.missing("zstd not installed")
    src_file = os.path.join(T, "reused-src")
    os.makedirs(src_file)
    with open(os.path.join(src_file, "other.txt"), "wb") as f:
        f.write(b"another backup under a reused name\n" * 100)
    root = os.path.join(T, "repo")
    url = "file://" + root
    key, files = round_trip(url, Store(root), "file")
    tamper(url, Store(root), key, files)
    keys(url, key)
    argon2id(os.path.join(T, "argon"))

    with_s3rver(T, lambda s3: round_trip(s3.url("enc"), Store(os.path.join(
        s3.data, s3.bucket, "enc"), s3=True), "s3"))
    shutil.rmtree(T, ignore_errors=True)
    finish()


main()
