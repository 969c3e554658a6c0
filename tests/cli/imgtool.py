#!/usr/bin/env python3
"""Poke at a ucow image's metadata for the corruption tests (layout: Documentation/format.md).

  imgtool.py hdr FILE                 the current header slot's fields, as JSON
  imgtool.py entry FILE CHUNK [VALUE] print / set lookup table entry CHUNK (u64)
  imgtool.py flags FILE VALUE         set the current slot's flags (checksum recomputed)
  imgtool.py set FILE FIELD VALUE     set a field of the current slot (checksum recomputed)
  imgtool.py flip FILE OFFSET         invert the byte at OFFSET
"""
import json
import struct
import sys

SLOT = 4096
MAGIC = b'UCOW\r\n\x1a\n'
FIELDS = [('virtual_size', 48, 'Q'), ('chunk_size', 56, 'I'), ('block_size', 60, 'I'),
          ('nr_chunks', 64, 'Q'), ('table_offset', 72, 'Q'), ('table_size', 80, 'Q'),
          ('bitmap_offset', 88, 'Q'), ('journal_offset', 104, 'Q'), ('data_offset', 168, 'Q'),
          ('flags', 40, 'I'), ('generation', 184, 'Q'), ('bitmap_size', 96, 'Q'),
          ('journal_size', 112, 'Q'), ('snap_table_offset', 128, 'Q'),
          ('snap_table_size', 136, 'Q'), ('nb_snapshots', 144, 'I'),
          ('refcount_offset', 152, 'Q'), ('refcount_size', 160, 'Q')]


def crc32c(data):
    crc = 0xffffffff
    tab = crc32c.tab
    for b in data:
        crc = tab[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


crc32c.tab = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
    crc32c.tab.append(c)


def slot_ok(b):
    if b[:8] != MAGIC:
        return False
    z = bytearray(b)
    z[44:48] = bytes(4)
    return crc32c(z) == struct.unpack_from('<I', b, 44)[0]


def current(f):
    f.seek(0)
    raw = f.read(2 * SLOT)
    best = None
    for i in range(2):
        b = raw[i * SLOT:(i + 1) * SLOT]
        if len(b) == SLOT and slot_ok(b):
            gen = struct.unpack_from('<Q', b, 184)[0]
            if best is None or gen > best[1]:
                best = (i, gen, bytearray(b))
    if best is None:
        sys.exit('no valid header slot')
    return best[0], best[2]


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    with open(path, 'r+b') as f:
        idx, h = current(f)
        hdr = {n: struct.unpack_from('<' + t, h, o)[0] for n, o, t in FIELDS}
        hdr['slot'] = idx
        if cmd == 'hdr':
            print(json.dumps(hdr))
        elif cmd == 'entry':
            off = hdr['table_offset'] + 8 * int(sys.argv[3])
            if len(sys.argv) > 4:
                f.seek(off)
                f.write(struct.pack('<Q', int(sys.argv[4], 0)))
            else:
                f.seek(off)
                print(struct.unpack('<Q', f.read(8))[0])
        elif cmd in ('flags', 'set'):
            if cmd == 'flags':
                struct.pack_into('<I', h, 40, int(sys.argv[3], 0))
            else:
                _, o, t = next(fl for fl in FIELDS if fl[0] == sys.argv[3])
                struct.pack_into('<' + t, h, o, int(sys.argv[4], 0))
            h[44:48] = bytes(4)
            struct.pack_into('<I', h, 44, crc32c(h))
            f.seek(idx * SLOT)
            f.write(h)
        elif cmd == 'flip':
            off = int(sys.argv[3], 0)
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xff]))
        else:
            sys.exit(__doc__)


if __name__ == '__main__':
    main()
