#!/usr/bin/env python3
"""Write vdisk(1) from its template and the built vdisk's own help.

Usage: help2roff.py VDISK TEMPLATE OUTPUT

The template (man/vdisk.1.in) holds the hand-written sections; the line
'.\\" @COMMAND_OPTIONS@' becomes one subsection per command with its usage,
every option and its notes and examples, taken from 'vdisk help COMMAND'.
The page can then never leave an option out or describe one the program
does not have: the help text is the one description of each option.
"""
import re
import subprocess
import sys

PLACEHOLDER = '.\\" @COMMAND_OPTIONS@'
# An option line: two spaces, the option, a gap of at least two spaces, text.
OPTION = re.compile(r"^  (\S.*?)(?: {2,}(\S.*))?$")


def escape(text):
    """Text as roff shows it literally."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def help_of(vdisk, command=None):
    argv = [vdisk, "help"] + ([command] if command else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    # 'vdisk help' prints to stdout; a command's help may go to either.
    return (done.stdout or done.stderr).rstrip("\n").split("\n")


def commands(vdisk):
    names, inside = [], False
    for line in help_of(vdisk):
        if line == "Commands:":
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            name = line.split()[0]
            if name != "help":
                names.append(name)
    if not names:
        sys.exit("help2roff: 'vdisk help' listed no commands")
    return names


def sections(lines):
    """Split a command's help into (heading, lines): the summary first."""
    parts, heading, body = [], None, []
    for line in lines:
        if re.fullmatch(r"[A-Z][a-z ]*:", line):
            parts.append((heading, body))
            heading, body = line[:-1], []
        else:
            body.append(line)
    parts.append((heading, body))
    return parts


def paragraphs(lines):
    out, words = [], []
    for line in lines + [""]:
        if line.strip():
            words.append(line.strip())
        elif words:
            out += [".PP", escape(" ".join(words))]
            words = []
    return out


def description_column(lines):
    """Where the descriptions start: the commonest column after a gap."""
    starts = [m.start(2) for m in map(OPTION.match, lines) if m and m.group(2)]
    return max(set(starts), key=starts.count) if starts else 0


def split_option(line, column):
    """(option, description) of an option line; the description may follow
    a single space where the option fills its column."""
    if column and len(line) > column and line[column - 1] == " " and line[column] != " ":
        return line[2:column].rstrip(), line[column:]
    m = OPTION.match(line)
    return m.group(1), m.group(2)


def options(lines):
    """Option lines as .TP items; free text after them as paragraphs."""
    out, rest = [], []
    column = description_column(lines)
    for line in lines:
        if rest or not line.strip():
            rest.append(line)
        elif line.startswith("  ") and not line.startswith("   "):
            term, text = split_option(line, column)
            out += [".TP", "\\fB" + escape(term) + "\\fR"]
            if text:
                out.append(escape(text))
        elif line.startswith(" " * column) or not out:
            out.append(escape(line.strip()))
        else:
            # a sub-item of the option above (e.g. one form of amend -o)
            out += [".br", "\\fI" + escape(line.strip()) + "\\fR", ".br"]
    # Notes that follow the options, and an option written after them.
    notes = []
    for line in rest:
        m = OPTION.match(line)
        if m and m.group(2) and line.startswith("  -"):
            out += [".TP", "\\fB" + escape(m.group(1)) + "\\fR", escape(m.group(2))]
        else:
            notes.append(line)
    return out + paragraphs(notes)


def command_page(vdisk, name):
    parts = sections(help_of(vdisk, name))
    summary = " ".join(l.strip() for l in parts[0][1] if l.strip())
    out = [".SS " + escape(name), escape(summary[:1].upper() + summary[1:]) + "."]
    for heading, body in parts[1:]:
        if heading == "Usage":
            out += [".PP", ".nf"] + [escape(l.strip()) for l in body if l.strip()] + [".fi"]
        elif heading == "Options":
            out += options(body)
        elif heading == "Examples":
            out += [".PP", "Examples:", ".nf"]
            out += [escape(l[2:]) for l in body if l.strip()] + [".fi"]
        else:
            out += [".PP", escape(heading) + ":"] + paragraphs(body)
    return out


def main():
    vdisk, template, output = sys.argv[1:4]
    with open(template, encoding="utf-8") as f:
        page = f.read()
    if PLACEHOLDER not in page:
        sys.exit(f"help2roff: {template} has no line {PLACEHOLDER}")
    generated = []
    for name in commands(vdisk):
        generated += command_page(vdisk, name)
    page = page.replace(PLACEHOLDER, "\n".join(generated))
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)


if __name__ == "__main__":
    main()
