#!/usr/bin/env python3
"""make-boot-sector.py FILE TEXT: a 512-byte BIOS boot sector whose code
writes TEXT and a line end to the first serial port (COM1, I/O port
0x3f8), over and over with a pause between."""
import sys

if len(sys.argv) != 3:
    sys.exit("usage: make-boot-sector.py FILE TEXT")
code = bytearray([
    0xFA, 0xFC, 0x31, 0xC0, 0x8E, 0xD8,  # cli; cld; xor ax, ax; mov ds, ax
    0xBE, 0, 0,                          # again: mov si, message (patched)
    0xBA, 0xF8, 0x03,                    # mov dx, 0x3f8
    0xAC, 0x84, 0xC0, 0x74, 0x03,        # next: lodsb; test al, al; jz pause
    0xEE, 0xEB, 0xF8,                    # out dx, al; jmp next
    0x66, 0xB9, 0, 0, 0, 0x04,           # pause: mov ecx, 0x04000000
    0x66, 0x49, 0x75, 0xFC,              # dec ecx; jnz $-2
    0xEB, 0xE6,                          # jmp again
])
message = 0x7C00 + len(code)
code[7], code[8] = message & 0xFF, message >> 8
sector = bytes(code) + sys.argv[2].encode() + b"\r\n\0"
sector += bytes(510 - len(sector)) + b"\x55\xaa"
with open(sys.argv[1], "wb") as f:
    f.write(sector)
