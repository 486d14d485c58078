#!/usr/bin/env python3
"""Draws assets/example.png (the demo's image): a sun, a house and a tree on a hill, 320x240 RGB.
Standard library only (zlib + struct), so anyone can regenerate it."""
import math, struct, zlib, os

W, H = 320, 240
px = bytearray(W * H * 3)

def put(x, y, c):
    if 0 <= x < W and 0 <= y < H:
        i = (y * W + x) * 3
        px[i:i + 3] = bytes(c)

for y in range(H):
    for x in range(W):
        t = y / H
        sky = (int(90 + 80 * t), int(150 + 60 * t), int(235 - 20 * t))
        hill = 170 + 25 * math.sin(x / 45.0)
        put(x, y, (60, int(140 + 30 * math.sin(x / 9.0 + y / 7.0) * 0.3), 50) if y > hill else sky)
for y in range(H):                       # sun
    for x in range(W):
        if (x - 262) ** 2 + (y - 52) ** 2 < 26 ** 2:
            put(x, y, (255, 214, 64))
for y in range(120, 190):                # house walls and door
    for x in range(70, 160):
        put(x, y, (200, 60, 50))
for y in range(150, 190):
    for x in range(105, 125):
        put(x, y, (90, 50, 30))
for y in range(80, 121):                 # roof
    half = (y - 80) * 55 // 40
    for x in range(115 - half, 115 + half + 1):
        put(x, y, (110, 40, 35))
for y in range(140, 192):                # tree
    for x in range(214, 224):
        put(x, y, (100, 70, 40))
for y in range(90, 150):
    for x in range(190, 250):
        if (x - 219) ** 2 + (y - 120) ** 2 < 30 ** 2:
            put(x, y, (40, int(120 + 20 * math.sin(x * 0.7) * math.cos(y * 0.5)), 40))

raw = b"".join(b"\x00" + bytes(px[y * W * 3:(y + 1) * W * 3]) for y in range(H))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
out = os.path.join(os.path.dirname(__file__), "..", "assets", "example.png")
with open(out, "wb") as f:
    f.write(png)
print(f"wrote {out}: {len(png)} bytes")
