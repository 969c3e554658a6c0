#!/usr/bin/env python3
"""Convert Documentation/format.md (the one source of the format) into scdoc markup for the
ucow-format(5) man page. Handles the Markdown that file uses: headings, paragraphs, fenced
code, pipe tables, "-" and "1." lists, `code`, **bold**.

    scripts/md2scd.py NAME SECTION TITLE < in.md > out.scd
"""
import re
import sys


def inline(text):
    """Markdown inline text -> scdoc: escape scdoc's markers, `code` and **x** -> *x*."""
    out = []
    # split into code spans and the rest
    for i, part in enumerate(re.split(r'(`[^`]*`)', text)):
        if i % 2:
            body = part[1:-1]
            body = body.replace('\\', '\\\\').replace('*', '\\*').replace('_', '\\_')
            out.append('*' + body + '*' if body.strip() else body)
            continue
        bold = re.split(r'(\*\*[^*]+\*\*)', part)
        for j, b in enumerate(bold):
            if j % 2:
                body = b[2:-2].replace('\\', '\\\\').replace('_', '\\_')
                out.append('*' + body + '*')
            else:
                out.append(b.replace('\\', '\\\\').replace('*', '\\*').replace('_', '\\_'))
    return ''.join(out)


def table(rows):
    cells = [[c.strip() for c in r.strip().strip('|').split('|')] for r in rows]
    head, body = cells[0], cells[2:]
    lines = []
    last = len(head) - 1	# the last column (the prose) takes the room left: ":<"
    for k, c in enumerate(head):
        lines.append(('[[ ' if k == 0 else ':< ' if k == last else ':[ ') + '*' +
                     inline(c).replace('*', '') + '*')
    for r in body:
        for k, c in enumerate(r):
            lines.append(('|[ ' if k == 0 else ':< ' if k == last else ':[ ') + (inline(c) or '-'))
    return lines


def convert(md, name, section, title):
    out = ['%s(%s) "ucow" "%s"' % (name, section, title), '']
    lines = md.split('\n')
    i = 0
    first_heading = True
    while i < len(lines):
        ln = lines[i]
        if ln.startswith('```'):
            out.append('```')
            i += 1
            while i < len(lines) and not lines[i].startswith('```'):
                out.append(lines[i])
                i += 1
            out.append('```')
            i += 1
            continue
        m = re.match(r'^(#+)\s+(.*)', ln)
        if m:
            if first_heading:	# the document title: the NAME section
                out += ['# NAME', '', '%s - %s' % (name, inline(m.group(2))), '']
                first_heading = False
            else:
                level = '#' if len(m.group(1)) <= 2 else '##'
                text = m.group(2).upper() if level == '#' else m.group(2)
                out += ['', level + ' ' + inline(text).replace('\\\\', '\\'), '']
            i += 1
            continue
        if ln.startswith('|'):
            rows = []
            while i < len(lines) and lines[i].startswith('|'):
                rows.append(lines[i])
                i += 1
            out += [''] + table(rows) + ['']
            continue
        m = re.match(r'^(\s*)([-*]|\d+\.)\s+(.*)', ln)
        if m:
            marker = '-' if m.group(2) in '-*' else '.'
            depth = len(m.group(1)) // 2
            out.append('\t' * depth + marker + ' ' + inline(m.group(3)))
            i += 1
            while i < len(lines) and lines[i].startswith('  ') and \
                    not re.match(r'^\s*([-*]|\d+\.)\s', lines[i]):
                out.append('\t' * depth + '  ' + inline(lines[i].strip()))
                i += 1
            continue
        out.append(inline(ln.strip()) if ln.strip() else '')
        i += 1
    # scdoc wants one blank line around headers, no runs of them
    text = re.sub(r'\n{3,}', '\n\n', '\n'.join(out)).strip() + '\n'
    text += '\n# SEE ALSO\n\n*ucow*(1), *ucow-dev*(8)\n'
    return text


if __name__ == '__main__':
    if len(sys.argv) != 4:
        sys.exit('usage: md2scd.py NAME SECTION TITLE < in.md > out.scd')
    sys.stdout.write(convert(sys.stdin.read(), *sys.argv[1:]))
