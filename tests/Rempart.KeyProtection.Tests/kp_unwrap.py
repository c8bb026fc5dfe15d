#!/usr/bin/env python3
"""An independent reader of Rempart key protectors, written from docs/key-protector.md with
pyca/cryptography (not from the C# code): opens a wrap with a P-384 private key, checks the AES-GCM
tag and the key protector's HMAC, and prints what it derived as JSON.

usage: kp_unwrap.py KP.json guardian|owner PRIVATE_KEY.pem [PASSPHRASE]
exit 1 (with a message on stderr) when a check fails.
"""
import base64
import datetime
import hashlib
import hmac
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def b64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def text(s):
    b = s.encode("utf-8")
    return struct.pack(">I", len(b)) + b


def blob(b):
    return struct.pack(">I", len(b)) + b


def hkdf(algorithm, ikm, info, length):
    # salt=None is RFC 5869's default: HashLen zero bytes, the same as an empty salt.
    return HKDF(algorithm=algorithm, length=length, salt=None, info=info).derive(ikm)


def header(kp):
    created = datetime.datetime.strptime(kp["createdAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    groups = kp["policy"]["hostGroups"]
    h = text("rempart/kp/v1/header") + bytes([kp["version"]]) + blob(b64u(kp["kpId"])) + text(kp["vmId"])
    h += text(kp["policy"]["shielding"]) + struct.pack(">I", len(groups))
    for g in groups:
        h += text(g)
    return h + struct.pack(">q", int(created.timestamp()))


def wrap(w, role):
    return (text(role) + text(w.get("guardianId", "")) + text(w["kid"]) + text(w["alg"]) + blob(b64u(w["epk"]))
            + blob(b64u(w["nonce"])) + blob(b64u(w["ct"])) + blob(b64u(w["tag"])))


def kid_of(spki):
    return base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).decode().rstrip("=")[:22]


def main():
    kp = json.load(open(sys.argv[1], encoding="utf-8"))
    role = sys.argv[2]
    password = sys.argv[4].encode() if len(sys.argv) > 4 else None
    key = serialization.load_pem_private_key(open(sys.argv[3], "rb").read(), password=password)
    assert isinstance(key.curve, ec.SECP384R1)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = kid_of(spki)
    candidates = [kp["owner"]] if role == "owner" else [w for w in kp["guardians"] if w["kid"] == kid]
    if not candidates or candidates[0]["kid"] != kid:
        sys.exit("no wrap for key " + kid)
    w = candidates[0]
    assert w["alg"] == "ECDH-ES-P384+HKDF-SHA384+A256GCM"

    digest = hashlib.sha256(header(kp)).digest()
    epk_der = b64u(w["epk"])
    z = key.exchange(ec.ECDH(), serialization.load_der_public_key(epk_der))
    info = text("rempart/kp/v1/wrap") + text(w["alg"]) + text(w["kid"]) + blob(epk_der) + blob(digest)
    kek = hkdf(hashes.SHA384(), z, info, 32)
    vmk = AESGCM(kek).decrypt(b64u(w["nonce"]), b64u(w["ct"]) + b64u(w["tag"]), digest)

    mac_key = hkdf(hashes.SHA256(), vmk, b"rempart/kp/v1/mac-key", 32)
    covered = text("rempart/kp/v1/mac") + blob(header(kp)) + wrap(kp["owner"], "owner") + struct.pack(">I", len(kp["guardians"]))
    for g in kp["guardians"]:
        covered += wrap(g, "guardian")
    if not hmac.compare_digest(hmac.new(mac_key, covered, hashlib.sha256).digest(), b64u(kp["mac"])):
        sys.exit("kp.integrity")

    print(json.dumps({
        "kid": kid,
        "headerDigest": digest.hex(),
        "z": z.hex(),
        "kek": kek.hex(),
        "vmk": vmk.hex(),
        "disk/d1": hkdf(hashes.SHA256(), vmk, b"rempart/vm-key/v1/disk/d1", 32).hex(),
    }))


if __name__ == "__main__":
    main()
