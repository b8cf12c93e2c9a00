#!/usr/bin/python3
"""Write a sparse sample disk: text-like data, random data, zeroes and holes.

usage: sample-disk.py FILE SIZE_MIB
"""
import os
import random
import sys

MIB = 1 << 20


def main():
    path, size_mib = sys.argv[1], int(sys.argv[2])
    rng = random.Random(1)
    words = [b"vdisk", b"sector", b"cluster", b"guest", b"boot", b"kernel", b"block"]
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
        for mib in range(0, size_mib, 2):  # every other MiB stays a hole
            if mib % 8 == 0:
                chunk = rng.randbytes(MIB)  # incompressible
            elif mib % 8 == 4:
                chunk = bytes(MIB)  # explicit zeroes
            else:
                text = b" ".join(rng.choice(words) for _ in range(MIB // 5))
                chunk = text[:MIB].ljust(MIB, b".")
            f.seek(mib * MIB)
            f.write(chunk)


if __name__ == "__main__":
    main()
