#!/usr/bin/env python3
"""Write the seed corpus of fuzz_packet into tests/fuzz/corpus/, that of
fuzz_tls into tests/fuzz/corpus-tls/, and that of fuzz_proxy into
tests/fuzz/corpus-proxy/.

Each seed is one input in the layout fuzz_packet.c describes at its top:
flags, size, the piece sizes, the consumer's answers, then the stream. The
seeds start the fuzzer off in every header layout and at each error, so
that it need not find them by chance; it mutates from there. The TLS seeds
follow fuzz_tls.c's layout: flags, read caps, corruption, then steps.
The PROXY seeds are real headers, after fuzz_proxy.c's flags, limit and
piece sizes.

    python3 tests/fuzz/make_corpus.py

The folders are emptied first, so a renamed seed leaves no stale copy.
Run the fuzz_replay ctest (or scripts/fuzz.sh) afterwards.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
CORPUS_TLS = os.path.join(HERE, "corpus-tls")
CORPUS_PROXY = os.path.join(HERE, "corpus-proxy")

# flags bits (fuzz_packet.c)
LEN4, BIG, INCL, ID, RAW = 1, 2, 4, 8, 16


def oom(n):
    """Flags bits for: the allocation after n - 1 successful ones fails."""
    return n << 5


def header_size(flags):
    return (4 if flags & LEN4 else 2) + (2 if flags & ID else 0)


def field(flags, value, nbytes):
    order = ">" if flags & BIG else "<"
    code = {2: "H", 4: "I"}[nbytes]
    return struct.pack(order + code, value)


def packet(flags, payload, pid=0, length=None):
    """A packet; `length` overrides the length field's value."""
    lsize = 4 if flags & LEN4 else 2
    if length is None:
        length = len(payload) + (header_size(flags) if flags & INCL else 0)
    out = field(flags, length, lsize)
    if flags & ID:
        out += field(flags, pid, 2)
    return out + payload


def packets(flags, sizes, first_id=1):
    return b"".join(
        packet(flags, bytes((i * 7 + j) & 0xFF for j in range(n)),
               first_id + i if flags & ID else 0)
        for i, n in enumerate(sizes))


def seed(flags, size, pieces, acts, stream):
    return (bytes([flags, size, len(pieces)]) + bytes(pieces) +
            bytes([len(acts)]) + bytes(acts) + stream)


def seeds():
    out = {}
    # Every layout: a few packets (an empty one too), in odd pieces with a
    # read of no bytes among them, a pause now and then, an incomplete tail.
    for layout in range(16):
        name = "layout-%s%s-%s-%s" % (
            "len4" if layout & LEN4 else "len2",
            "be" if layout & BIG else "le",
            "incl" if layout & INCL else "excl",
            "id" if layout & ID else "noid")
        stream = packets(layout, [0, 1, 5, 17, 3]) + packets(layout, [9])[:-4]
        out[name] = seed(layout, 40, [1, 3, 0, 7, 2], [0, 1, 0], stream)

    lect = INCL | ID  # the lecture's layout, cport's default
    many = packets(lect, [i % 13 for i in range(30)])
    out["whole-reads"] = seed(lect, 0xFE, [], [], many)
    out["one-byte-pieces-pauses"] = seed(lect, 30, [1], [1, 0, 1, 1], many)
    out["pause-every-packet"] = seed(lect, 30, [0xFF], [1], many)
    # A pause that lets one more piece in first; with small packets and
    # pieces, the second read no longer fits the limit (CPORT_ERECVFULL).
    out["pause-read-on"] = seed(lect, 30, [7], [3, 0], many)
    out["pause-read-on-full"] = seed(lect, 5, [20], [3], packets(
        lect, [i % 6 for i in range(20)]))
    # a pause after the second, so that the close comes as the pause ends
    out["close-after-third"] = seed(lect, 30, [20], [0, 1, 0xFF], many)
    out["tail-half-header"] = seed(lect, 30, [2], [], packets(lect, [3]) +
                                   b"\x09")
    out["tail-half-payload"] = seed(lect, 30, [4], [], packets(lect, [3, 8])
                                    [:-3])
    out["empty"] = b""
    out["flags-only"] = bytes([lect])

    # Bad headers, after good packets, arriving in pieces.
    good = packets(lect, [2, 4])
    out["below-header"] = seed(lect, 40, [3, 1], [],
                               good + packet(lect, b"", 9, length=3))
    out["below-header-zero"] = seed(lect | LEN4 | BIG, 40, [1], [],
                                    packets(lect | LEN4 | BIG, [1]) +
                                    packet(lect | LEN4 | BIG, b"", 1,
                                           length=0))
    # max_packet is the header plus the size byte: 10 payload bytes here.
    out["at-max-packet"] = seed(lect, 10, [6], [],
                                packets(lect, [10, 10]))
    out["over-max-packet"] = seed(lect, 10, [6], [],
                                  good + packets(lect, [11]))
    out["over-max-excl"] = seed(ID, 10, [1], [],
                                packets(ID, [3]) + packet(ID, b"", 1,
                                                          length=11))
    # 4-byte lengths at 0xFFFFFFFF: over 65535; with max_packet UINT32_MAX,
    # over it only once the header is added (no wrap allowed), and a valid
    # header with a tail that never completes when the length counts it.
    for name, flags, size in [
        ("ffffffff-excl-max64k", LEN4 | ID, 0xFE),
        ("ffffffff-excl-max4g", LEN4 | ID, 0xFF),
        ("ffffffff-excl-max4g-be", LEN4 | BIG, 0xFF),
        ("ffffffff-incl-max4g", LEN4 | INCL | ID, 0xFF),
        ("ffffffff-incl-max64k", LEN4 | INCL, 0xFE),
    ]:
        stream = packets(flags, [1, 0]) + packet(flags, b"xyz", 2,
                                                 length=0xFFFFFFFF)
        out[name] = seed(flags, size, [3, 0xFF], [], stream)
    out["ffff-len2-max64k"] = seed(INCL, 0xFE, [1], [],
                                   packet(INCL, b"ab", length=0xFFFF))

    # Raw mode: an on_recv taking what the answers say, against small
    # receive limits.
    raw = bytes(range(200))
    out["raw-take-all"] = seed(RAW, 0xFF, [13, 0xFF], [], raw)
    out["raw-partial"] = seed(RAW, 63, [7, 0, 30], [3, 0, 5, 0xFE, 1], raw)
    out["raw-full-kept"] = seed(RAW, 15, [4], [0], raw)
    out["raw-full-one-read"] = seed(RAW, 15, [0xFF], [2], raw)
    out["raw-close"] = seed(RAW, 99, [9], [4, 0xFF], raw)
    # Past the buffer's first 4 KiB, so that it grows (realloc): by
    # doubling; then up to a limit of 5 KiB, which caps the doubling, with
    # that realloc failing.
    out["raw-grow"] = seed(RAW, 0xFF, [100], [0], raw * 22)
    out["oom-grow"] = seed(RAW | oom(2), 0xF4, [100], [0], raw * 22)

    # Out of memory: the first allocation, then the second, fails.
    out["oom-first-keep"] = seed(lect | oom(1), 40, [3], [], many)
    out["oom-second-keep"] = seed(lect | oom(2), 40, [3], [], many)
    out["oom-raw"] = seed(RAW | oom(1), 0xFF, [10], [4], raw)
    return out


# fuzz_tls.c: flags bits, and steps (an op byte: the side in bit 0, the
# kind in bits 1-2, a write's size shift in bits 3-4).
TLS12, CORRUPT, CORRUPT_SERVER = 1, 2, 4
CLIENT, SERVER = 0, 1


def tls_seed(flags=0, caps=(0, 0), at=None, xor=0, steps=b""):
    if at is not None:
        flags |= CORRUPT
    return (bytes([flags, caps[0], caps[1]]) +
            struct.pack(">H", at or 0) + bytes([xor]) + steps)


def feed(side, size=0, budget=0):
    return bytes([side | 0 << 1, size, budget])


def drain(side, budget=0):
    return bytes([side | 1 << 1, budget])


def write(side, data=b"", size=None, shift=0):
    """`data` (shift 0), or a pattern of size << 3 * shift bytes."""
    if shift:
        return bytes([side | 2 << 1 | shift << 3, size])
    return bytes([side | 2 << 1, len(data)]) + data


def close(side):
    return bytes([side | 3 << 1])


def tls_seeds():
    out = {}
    hello = write(CLIENT, b"hello from the client") + write(
        SERVER, b"hello from the server")
    out["whole"] = tls_seed(steps=hello)
    out["tls12"] = tls_seed(TLS12, steps=hello)
    # One byte at a time both ways, the handshake and the data too.
    ones = (feed(SERVER, 1) + feed(CLIENT, 1)) * 400
    out["one-byte-pieces"] = tls_seed(steps=hello + ones)
    out["one-byte-pieces-tls12"] = tls_seed(TLS12, steps=hello + ones)
    # Reads of 1 or 7 bytes that stop after one or two, so that ciphertext
    # stays kept while more comes, and is drained later.
    paused = (hello + feed(SERVER) + feed(CLIENT) + feed(SERVER) +
              write(CLIENT, size=200, shift=1) + feed(SERVER, 100, 1) +
              feed(SERVER, 100, 2) + drain(SERVER, 1) + feed(SERVER, 0, 1) +
              drain(SERVER, 3) + write(SERVER, size=9, shift=2) +
              feed(CLIENT, 33, 1) + feed(CLIENT, 200, 1) + drain(CLIENT, 2))
    out["paused-reads"] = tls_seed(caps=(7, 1), steps=paused)
    # Many records in one piece, a reader that stops after one read: the
    # rest is kept, more comes while it is, and drains take it on.
    records = b"".join(write(CLIENT, bytes([65 + i]) * 20) for i in range(12))
    kept = (hello + feed(SERVER) + feed(CLIENT) + feed(SERVER) + records +
            feed(SERVER, 0, 1) + records + feed(SERVER, 30, 1) +
            drain(SERVER, 1) + feed(SERVER, 0, 2) + drain(SERVER, 1) +
            records + feed(SERVER, 0, 1) + drain(SERVER, 3))
    out["kept-while-more-comes"] = tls_seed(caps=(0, 5), steps=kept)
    out["kept-while-more-comes-tls12"] = tls_seed(TLS12, caps=(0, 5),
                                                  steps=kept)
    # Whole-record reads: a pause between two records leaves nothing in
    # OpenSSL, only the kept ciphertext, for has_input to report.
    out["kept-whole-records"] = tls_seed(steps=kept)
    # Writes over one 16 KiB record, in pieces of mixed sizes.
    big = (hello + write(CLIENT, size=255, shift=3) +
           write(SERVER, size=100, shift=3) +
           (feed(SERVER, 250, 3) + feed(CLIENT, 77, 0)) * 40)
    out["big-writes"] = tls_seed(caps=(200, 0), steps=big)
    # A side closes early; the other goes on writing, then closes too.
    early = (feed(SERVER) + feed(CLIENT) + feed(SERVER) + close(CLIENT) +
             write(SERVER, b"after your close") + feed(SERVER) +
             feed(CLIENT, 5))
    out["close-early"] = tls_seed(steps=hello + early)
    # Corruption: in the client's hello, a record header's version, the
    # server's certificate, the data.
    out["corrupt-hello"] = tls_seed(at=40, xor=1, steps=hello)
    out["corrupt-version"] = tls_seed(at=2, xor=1, steps=hello)
    out["corrupt-server"] = tls_seed(CORRUPT_SERVER, at=300, steps=hello)
    out["corrupt-data"] = tls_seed(at=20000, caps=(3, 3), steps=big)
    out["corrupt-length"] = tls_seed(CORRUPT_SERVER, at=3, xor=0x10,
                                     steps=hello)
    # Out of memory: cport's first, second, fourth allocation fails.
    for n in (1, 2, 4):
        out["oom-%d" % n] = tls_seed(n << 3, caps=(5, 0),
                                     steps=hello + paused)
    return out


# fuzz_proxy.c's flags: the versions accepted, fill in CRC32C TLVs.
P_V1, P_V2, P_ANY, P_CRC = 1, 2, 3, 4
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_seed(flags, stream, max8=0, pieces=b""):
    return bytes([flags, max8, len(pieces)]) + pieces + stream


def tlv(kind, value):
    return struct.pack(">BH", kind, len(value)) + value


def v2(ver_cmd, fam, body):
    return V2_SIG + struct.pack(">BBH", ver_cmd, fam, len(body)) + body


def proxy_seeds():
    out = {}
    hello = b"\x16\x03\x01\x00\xf4\x01\x00\x00\xf0\x03\x03"
    tcp4 = bytes([192, 168, 0, 1, 10, 0, 0, 1]) + struct.pack(">HH", 56324,
                                                                 443)
    tcp6 = (bytes.fromhex("20010db8000000000000000000000001") +
            bytes.fromhex("00000000000000000000000000000001") +
            struct.pack(">HH", 65535, 80))
    out["v1-tcp4"] = proxy_seed(
        P_ANY, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /")
    out["v1-tcp6"] = proxy_seed(
        P_V1, b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 0\r\n",
        pieces=b"\x01\x07")
    out["v1-unknown"] = proxy_seed(P_ANY, b"PROXY UNKNOWN\r\n")
    out["v1-unknown-rest"] = proxy_seed(
        P_ANY, b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        pieces=b"\x05")
    out["v1-no-crlf"] = proxy_seed(P_ANY, b"PROXY UNKNOWN " + b"a" * 100)
    out["v1-bad-port"] = proxy_seed(
        P_ANY, b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", pieces=b"\x01")
    out["v2-local"] = proxy_seed(P_ANY, v2(0x20, 0x00, b""))
    out["v2-tcp4-tlvs"] = proxy_seed(
        P_V2, v2(0x21, 0x11, tcp4 + tlv(0x01, b"h2") +
                 tlv(0x02, b"example.com") + tlv(0x04, b"") +
                 tlv(0x05, b"id-1234") + tlv(0xE0, b"custom")) + hello,
        pieces=b"\x03\x0d")
    out["v2-tcp6"] = proxy_seed(P_ANY, v2(0x21, 0x21, tcp6), pieces=b"\x10")
    out["v2-crc"] = proxy_seed(
        P_ANY | P_CRC, v2(0x21, 0x11, tcp4 + tlv(0x01, b"h2") +
                          tlv(0x03, b"\x00" * 4)), pieces=b"\x01")
    ssl = (b"\x07" + struct.pack(">I", 0) + tlv(0x21, b"TLSv1.3") +
           tlv(0x22, b"client.example") +
           tlv(0x23, b"TLS_AES_256_GCM_SHA384") + tlv(0x24, b"SHA256") +
           tlv(0x25, b"RSA2048"))
    out["v2-ssl"] = proxy_seed(
        P_ANY | P_CRC, v2(0x21, 0x11, tcp4 + tlv(0x20, ssl) +
                          tlv(0x30, b"ns1") + tlv(0x03, b"\x00" * 4)))
    out["v2-unix"] = proxy_seed(P_ANY, v2(0x21, 0x31, b"\x00" * 216 +
                                          tlv(0x01, b"h2")))
    out["v2-over-max"] = proxy_seed(
        P_ANY, V2_SIG + b"\x21\x11\xff\xff" + tcp4, max8=64)
    out["plain-http"] = proxy_seed(P_ANY, b"GET / HTTP/1.1\r\n\r\n")
    out["tls-hello"] = proxy_seed(P_ANY, hello)
    return out


def write_folder(folder, all_seeds):
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    for name, data in sorted(all_seeds.items()):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print("%d seeds, %d bytes, in %s" % (
        len(all_seeds), sum(len(d) for d in all_seeds.values()), folder))


def main():
    write_folder(CORPUS, seeds())
    write_folder(CORPUS_TLS, tls_seeds())
    write_folder(CORPUS_PROXY, proxy_seeds())


if __name__ == "__main__":
    main()
