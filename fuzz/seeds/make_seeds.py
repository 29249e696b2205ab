#!/usr/bin/env python3
"""Writes the committed seed corpus of every fuzz target (fuzz/seeds/<target>/).

Run from anywhere: python3 fuzz/seeds/make_seeds.py. The seeds are small
valid inputs (PDUs, CDB records, configuration files, control requests) so
each short CI run starts from the interesting paths instead of from nothing.
"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def bhs(op, flags=0, itt=0, data=b"", rest=b""):
    """A 48-byte BHS (RFC 7143 §11.2) with DataSegmentLength set, then the
    data padded to 4 bytes."""
    b = bytearray(48)
    b[0] = op
    b[1] = flags
    n = len(data)
    b[5:8] = n.to_bytes(3, "big")
    b[16:20] = itt.to_bytes(4, "big")
    b[20 : 20 + len(rest)] = rest
    pad = (-n) % 4
    return bytes(b) + data + b"\0" * pad


def text(*pairs):
    return b"".join(p.encode() + b"\0" for p in pairs)


def login(csg, nsg, transit, keys, isid=b"\x00\x02\x3d\x00\x00\x01", cmd_sn=1):
    b = bytearray(48)
    b[0] = 0x43
    b[1] = (0x80 if transit else 0) | (csg << 2) | nsg
    data = text(*keys)
    b[5:8] = len(data).to_bytes(3, "big")
    b[8:14] = isid
    b[16:20] = (1).to_bytes(4, "big")
    b[24:28] = cmd_sn.to_bytes(4, "big")
    return bytes(b) + data + b"\0" * ((-len(data)) % 4)


NOP_OUT = bhs(0x40, 0x80, itt=0x10, rest=b"\xff\xff\xff\xff" + (1).to_bytes(4, "big"))


def scsi_cmd(cdb, edtl, itt=1, write=False, read=False, data=b""):
    flags = 0x80 | (0x20 if write else 0) | (0x40 if read else 0) | 0x01
    rest = edtl.to_bytes(4, "big") + (1).to_bytes(4, "big") + (1).to_bytes(4, "big")
    b = bytearray(bhs(0x01, flags, itt=itt, data=data, rest=rest))
    b[32 : 32 + len(cdb)] = cdb
    return bytes(b)


INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0])

# pdu_decode: mode byte (bit 0 header digest, bit 1 data digest), then PDUs.
put("pdu_decode", "nop_out", b"\x00" + NOP_OUT)
put("pdu_decode", "write_immediate", b"\x00" + scsi_cmd(WRITE10, 512, write=True, data=b"\xab" * 512))
put("pdu_decode", "read_then_nop", b"\x00" + scsi_cmd(READ10, 512, read=True) + NOP_OUT)
put("pdu_decode", "data_out", b"\x00" + bhs(0x05, 0x80, itt=1, data=b"\x11" * 64))
put("pdu_decode", "tmf_logout_text", b"\x00" + bhs(0x02, 0x81, itt=2) + bhs(0x06, 0x80, itt=3)
    + bhs(0x04, 0x80, itt=4, data=text("SendTargets=All")))

# text_pairs: Key=Value\0 lists.
put("text_pairs", "operational", text("HeaderDigest=None,CRC32C", "DataDigest=None",
    "MaxRecvDataSegmentLength=262144", "InitialR2T=No", "ImmediateData=Yes",
    "MaxBurstLength=1048576", "FirstBurstLength=262144", "MaxOutstandingR2T=1"))
put("text_pairs", "security", text("InitiatorName=iqn.2026-11.io.iet:init", "SessionType=Normal",
    "TargetName=iqn.2026-11.io.iet:fuzz", "AuthMethod=CHAP,None"))
put("text_pairs", "chap", text("CHAP_A=5", "CHAP_N=u", "CHAP_R=0x" + "ab" * 16, "X-com.example=1"))

# login_sequence: whole logins.
sec = ["InitiatorName=iqn.2026-11.io.iet:init", "SessionType=Normal",
       "TargetName=iqn.2026-11.io.iet:fuzz", "AuthMethod=CHAP"]
put("login_sequence", "chap", login(0, 0, False, sec) + login(0, 0, False, ["CHAP_A=5"])
    + login(0, 1, True, ["CHAP_N=u", "CHAP_R=0x" + "00" * 16]))
put("login_sequence", "discovery", login(0, 1, True, ["InitiatorName=iqn.2026-11.io.iet:init",
    "SessionType=Discovery", "AuthMethod=None"])
    + login(1, 3, True, ["HeaderDigest=None", "DataDigest=None", "MaxRecvDataSegmentLength=65536"]))
put("login_sequence", "operational_only", login(1, 3, True, ["InitiatorName=iqn.2026-11.io.iet:init",
    "TargetName=iqn.2026-11.io.iet:fuzz", "ImmediateData=Yes", "MaxBurstLength=262144"]))


# scsi_dispatch: records `op lun nexus cdb_len cdb.. dlen(LE16) data..`
def cmd(cdb, data=b"", lun=0, nexus=0, op=8):
    return bytes([op, lun, nexus, len(cdb)]) + cdb + struct.pack("<H", len(data)) + data


def cdb16(op, lba, blocks, byte1=0):
    return bytes([op, byte1]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"


unmap_list = struct.pack(">HH4x", 22, 16) + (8).to_bytes(8, "big") + (4).to_bytes(4, "big") + b"\0" * 4
pr_register = b"\0" * 8 + (0x1234).to_bytes(8, "big") + b"\0" * 8
put("scsi_dispatch", "inquiry_vpd", cmd(INQUIRY) + cmd(bytes([0x12, 1, 0x00, 0, 255, 0]))
    + cmd(bytes([0x12, 1, 0x83, 0, 255, 0])) + cmd(bytes([0x12, 1, 0xB0, 0, 255, 0]), op=9)
    + cmd(bytes([0x12, 1, 0xB2, 0, 255, 0]), lun=1))
put("scsi_dispatch", "read_write", cmd(WRITE10, b"\x5a" * 512) + cmd(READ10)
    + cmd(cdb16(0x8A, 2, 1, 0x08), b"\x33" * 4096, lun=1) + cmd(cdb16(0x88, 2, 1), lun=1)
    + cmd(bytes([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0])))
put("scsi_dispatch", "capacity_modes_luns", cmd(bytes([0x9E, 0x10]) + b"\0" * 8 + (32).to_bytes(4, "big") + b"\0\0")
    + cmd(bytes([0x25]) + b"\0" * 9) + cmd(bytes([0x1A, 0, 0x3F, 0, 255, 0]))
    + cmd(bytes([0x5A, 0, 0x08, 0, 0, 0, 0, 1, 0, 0])) + cmd(bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))
    + cmd(bytes([0x00] * 6), lun=2) + cmd(bytes([0x03, 0, 0, 0, 252, 0])))
put("scsi_dispatch", "thin_and_compare", cmd(bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]), unmap_list)
    + cmd(bytes([0x9E, 0x12]) + (0).to_bytes(8, "big") + (64).to_bytes(4, "big") + b"\0\0")
    + cmd(cdb16(0x93, 4, 8), b"\x01" * 512)
    + cmd(bytes([0x89, 0]) + (4).to_bytes(8, "big") + b"\0\0\0" + bytes([1, 0, 0]), b"\x01" * 512 + b"\x02" * 512))
put("scsi_dispatch", "reservations_resets", cmd(bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0]), pr_register)
    + cmd(bytes([0x5E, 0, 0, 0, 0, 0, 0, 4, 0, 0]), nexus=1)
    + cmd(bytes([0x16, 0, 0, 0, 0, 0])) + cmd(WRITE10, b"\0" * 512, nexus=1)
    + bytes([0, 0, 0]) + cmd(bytes([0x00] * 6)) + bytes([2, 0, 1]) + bytes([3, 0, 0, 7])
    + cmd(bytes([0x9E, 0x10]) + b"\0" * 8 + (32).to_bytes(4, "big") + b"\0\0"))

# Structured targets read their input through `arbitrary`: random bytes
# of a few sizes are as good a start as any.
rng = random.Random(14)
for target in ("ffp_connection", "cmdsn_queue"):
    for size in (64, 256, 1024, 4096):
        put(target, f"random_{size}", bytes(rng.randrange(256) for _ in range(size)))

# config_readers: mode byte (0 TOML, 1 ietd.conf, 2 initiators file), text.
with open(os.path.join(ROOT, "examples", "iet.toml"), "rb") as f:
    put("config_readers", "example_toml", b"\x00" + f.read())
put("config_readers", "minimal_toml", b"\x00" + b'[[target]]\nname = "iqn.2026-11.io.iet:a"\n'
    b'[[target.lun]]\nnumber = 0\npath = "mem:1M"\n')
put("config_readers", "ietd_conf", b"\x01" + b"""IncomingUser disco discosecret
Target iqn.2026-11.io.iet:a
\tIncomingUser joe secretsecret
\tOutgoingUser jim 12charpasswd
\tLun 0 Path=/srv/a.img,Type=fileio,ScsiSN=SN-A,IOMode=wt
\tLun 1 Type=nullio,Blocks=2048
\tAlias First
\tMaxConnections 2
\tHeaderDigest None,CRC32C
\tWthreads 8
Target iqn.2026-11.io.iet:b
\tLun 0 Path=/dev/sdz,Type=blockio,BlockSize=4096
\tMaxBurstLength 262144
""")
put("config_readers", "initiators_allow", b"\x02" + b"Target iqn.2026-11.io.iet:a\n"
    b"iqn.2026-11.io.iet:a 10.0.0.0/8, 192.168.1.1, iqn.2026-11.io.iet:init\nALL 127.0.0.1\n")

# control_request: one JSON line each.
for name, line in {
    "lun_resize": '{"version":1,"op":"lun_resize","target":"iqn.2026-11.io.iet:t","lun":0,"size":1048576}',
    "lun_new": '{"version":1,"op":"lun_new","target":"iqn.2026-11.io.iet:t","path":"mem:1M","read_only":true}',
    "portal_set": '{"version":1,"op":"portal_set","listen":"[::1]:3260","accounting":true,"redirect":false,"congestion":"bbr"}',
    "account_add": '{"version":1,"op":"account_add","scope":{"target":"iqn.2026-11.io.iet:t"},"direction":"incoming","user":"u","secret":"s3cr3ts3cr3t"}',
    "acl_set": '{"version":1,"op":"acl_set","target":"iqn.2026-11.io.iet:t","allow":["10.0.0.0/8"],"deny":["ALL"]}',
    "show_sessions": '{"version":1,"op":"show_sessions"}',
    "response": '{"ok":true,"data":{"sessions":[{"tsih":1,"cid":[0,1]}]}}',
}.items():
    put("control_request", name, line)
