"""cairn's encryption as docs/FORMAT.md specifies it, written from the spec alone for the tests
that read a repository independently (tests/cli/test_encryption.py, tests/storage/
test_dedup.py): the HKDF of every key, a key object's unwrapping and the chunked AEAD stream
of a stored object. Needs Python's `cryptography` (scripts/deps.sh test): without it the
importing test SKIPs (77), a failure under CI=true."""
import base64

import skips

try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:
    skips.missing("python3-cryptography not installed (scripts/deps.sh test)")


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def b64(s):
    return base64.b64decode(s, validate=True)


def key_file_wrap(key, k):
    """The wrapping key of key object k (parsed JSON) of type key-file, from the key file's 32
    bytes."""
    return hkdf(key, b64(k["salt"]), b"cairn key-file wrap v1")


def unwrap(k, wrap):
    """The master key in key object k, opened with its wrapping key (raises when it does not
    open)."""
    aad = ("cairn key v1 %s %s" % (k["repository"], k["id"])).encode()
    return AESGCM(wrap).decrypt(b64(k["nonce"]), b64(k["data"]), aad)


def aead_open(k_data, repo_id, chunk, backup, name, data, bid=bytes(16)):
    """The plaintext of stored object NAME of BACKUP (a chunked AEAD stream, "CRNAEAD2"):
    k_data the repository's data key, chunk its chunk_size, bid the backup's id (zero for the
    MANIFEST and repository objects)."""
    assert data[:8] == b"CRNAEAD2", "no header"
    hdr, salt, prefix = data[:32], data[8:24], data[24:32]
    k = AESGCM(hkdf(k_data, salt, b"cairn object key v1"))
    ad = b"cairn object v1\0" + repo_id + backup.encode() + b"\0" + name.encode() + b"\0" + bid
    rest, out, i, n = data[32:], [], 0, chunk + 16
    while True:
        last = len(rest) <= n
        piece, rest = (rest, b"") if last else (rest[:n], rest[n:])
        nonce = prefix + ((i | 0x80000000) if last else i).to_bytes(4, "big")
        out.append(k.decrypt(nonce, piece, hdr + ad))
        i += 1
        if last:
            return b"".join(out)
