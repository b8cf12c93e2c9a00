#!/usr/bin/env python3
"""make-efi-app.py FILE TEXT: a UEFI application (PE32+, x86-64, subsystem
EFI_APPLICATION) that writes TEXT and a line end to the first serial port
(COM1, I/O port 0x3f8), over and over with a pause between, never
returning to the firmware. The libvirt suite's EFI boot case puts it on a
disk as \\EFI\\BOOT\\BOOTX64.EFI, the file UEFI boots from a disk that no
boot entry names.

The image is written field by field from the PE/COFF specification: one
.text section holding the code and the message; the code is position
independent (the message is addressed relative to RIP) and the image has
no base relocations, so the firmware may load it anywhere.
"""
import struct
import sys

FILE_ALIGNMENT = 0x200
SECTION_ALIGNMENT = 0x1000
TEXT_RVA = 0x1000
TEXT_OFFSET = 0x200  # the headers fill the first file block

COM1 = 0x3F8
COM1_LINE_STATUS = COM1 + 5
THR_EMPTY = 0x20  # line status: the transmit holding register is empty


def code(message_text):
    """The machine code and its message, as one block placed at TEXT_RVA.

    Each instruction is (label or None, bytes, fixup): a fixup names the
    label a trailing rel8/rel32 field points to.
    """
    program = [
        ("again", b"\x48\x8d\x35", ("message", 4)),  # lea rsi, [rip + message]
        ("next", b"\x66\xba" + struct.pack("<H", COM1_LINE_STATUS), None),  # mov dx, LSR
        ("wait", b"\xec", None),  # in al, dx
        (None, b"\xa8" + bytes([THR_EMPTY]), None),  # test al, THR_EMPTY
        (None, b"\x74", ("wait", 1)),  # jz wait
        (None, b"\xac", None),  # lodsb
        (None, b"\x84\xc0", None),  # test al, al
        (None, b"\x74", ("pause", 1)),  # jz pause
        (None, b"\x66\xba" + struct.pack("<H", COM1), None),  # mov dx, COM1
        (None, b"\xee", None),  # out dx, al
        (None, b"\xeb", ("next", 1)),  # jmp next
        ("pause", b"\xb9" + struct.pack("<I", 0x04000000), None),  # mov ecx, count
        ("delay", b"\xff\xc9", None),  # dec ecx
        (None, b"\x75", ("delay", 1)),  # jnz delay
        (None, b"\xeb", ("again", 1)),  # jmp again
    ]
    labels, position = {}, 0
    for label, opcode, fixup in program:
        if label is not None:
            labels[label] = position
        position += len(opcode) + (fixup[1] if fixup else 0)
    labels["message"] = position
    out = bytearray()
    for _, opcode, fixup in program:
        out += opcode
        if fixup is not None:
            target, size = fixup
            relative = labels[target] - (len(out) + size)
            out += struct.pack("<b" if size == 1 else "<i", relative)
    return bytes(out) + message_text.encode() + b"\r\n\0"


def align(n, to):
    return (n + to - 1) // to * to


def pe_image(text):
    raw_size = align(len(text), FILE_ALIGNMENT)
    image_size = TEXT_RVA + align(len(text), SECTION_ALIGNMENT)

    dos = bytearray(64)
    dos[0:2] = b"MZ"
    pe_offset = len(dos)
    struct.pack_into("<I", dos, 0x3C, pe_offset)  # e_lfanew

    data_directories = 16
    optional_size = 112 + 8 * data_directories
    coff = struct.pack(
        "<HHIIIHH",
        0x8664,  # Machine: x86-64
        1,  # NumberOfSections
        0,  # TimeDateStamp
        0,  # PointerToSymbolTable
        0,  # NumberOfSymbols
        optional_size,  # SizeOfOptionalHeader
        0x0022,  # Characteristics: EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE
    )
    optional = struct.pack(
        "<HBBIIIII",
        0x020B,  # Magic: PE32+
        0,  # MajorLinkerVersion
        0,  # MinorLinkerVersion
        raw_size,  # SizeOfCode
        0,  # SizeOfInitializedData
        0,  # SizeOfUninitializedData
        TEXT_RVA,  # AddressOfEntryPoint: the code's first byte
        TEXT_RVA,  # BaseOfCode
    )
    optional += struct.pack(
        "<QIIHHHHHHIIIIHHQQQQII",
        0x400000,  # ImageBase (a preference; the image runs anywhere)
        SECTION_ALIGNMENT,
        FILE_ALIGNMENT,
        0, 0,  # OperatingSystemVersion
        0, 0,  # ImageVersion
        0, 0,  # SubsystemVersion
        0,  # Win32VersionValue
        image_size,  # SizeOfImage
        TEXT_OFFSET,  # SizeOfHeaders
        0,  # CheckSum
        10,  # Subsystem: EFI_APPLICATION
        0,  # DllCharacteristics
        0x10000, 0x10000,  # SizeOfStackReserve, SizeOfStackCommit
        0, 0,  # SizeOfHeapReserve, SizeOfHeapCommit
        0,  # LoaderFlags
        data_directories,  # NumberOfRvaAndSizes: all empty, no relocations
    )
    optional += bytes(8 * data_directories)
    assert len(optional) == optional_size
    section = struct.pack(
        "<8sIIIIIIHHI",
        b".text",
        len(text),  # VirtualSize
        TEXT_RVA,  # VirtualAddress
        raw_size,  # SizeOfRawData
        TEXT_OFFSET,  # PointerToRawData
        0, 0, 0, 0,  # relocations and line numbers: none
        0x60000020,  # CNT_CODE | MEM_EXECUTE | MEM_READ
    )
    headers = bytes(dos) + b"PE\0\0" + coff + optional + section
    assert len(headers) <= TEXT_OFFSET
    headers += bytes(TEXT_OFFSET - len(headers))
    return headers + text + bytes(raw_size - len(text))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make-efi-app.py FILE TEXT")
    with open(sys.argv[1], "wb") as f:
        f.write(pe_image(code(sys.argv[2])))


if __name__ == "__main__":
    main()
