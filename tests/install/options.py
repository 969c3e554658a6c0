#!/usr/bin/env python3
"""For every command and dev subcommand, the options of `ucow CMD --help`, of its man page
section (Documentation/man/*.scd) and of its reference (Documentation/cli.md, or for dev
subcommands the Commands table of Documentation/ublk.md) must agree. The help's option
lines are the list: the man page must name every option of it, long and short names alike,
and nothing else; the reference (its synopsis and the option column of its tables) must
name each option by one of its names (`-U` for "-U, --force-share") and nothing else.
-h/--help is left out (every command has it). One PASS/FAIL line per command.

    tests/install/options.py BUILD
"""
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
DOC = os.path.join(ROOT, 'Documentation')
OPT = re.compile(r'(?<![\w-])(--?[A-Za-z][\w-]*)')


def norm(tokens):
    return {t for t in tokens if t not in ('-h', '--help')}


def help_opts(ucow, words):
    """The help's option lines ("  -f FMT", "  -U, --force-share"): a list of sets of names."""
    out = subprocess.run([ucow] + words + ['--help'], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError('%s --help exited %d' % (' '.join(words), out.returncode))
    groups = []
    for ln in out.stdout.split('\n'):
        m = re.match(r'^  (-\S.*?)(\s{2,}|$)', ln)
        if m:
            g = norm(re.match(r'--?[A-Za-z][\w-]*', part).group(0)
                     for part in m.group(1).split(', '))
            if g:
                groups.append(g)
    return groups


def sections(text, pattern):
    """{title: body} of the sections whose heading matches pattern (one group: the title)."""
    res, cur = {}, None
    for ln in text.split('\n'):
        m = re.match(pattern, ln)
        if m:
            cur = m.group(1).strip()
            res[cur] = []
        elif re.match(r'^#', ln):
            cur = None
        elif cur:
            res[cur].append(ln)
    return res


def man_opts(body):
    """Option terms of a man section: lines "*-f* _FMT_", "*-U*, *--force-share*"."""
    found = set()
    for ln in body:
        if ln.startswith('*-'):
            found |= set(re.findall(r'\*(--?[A-Za-z][\w-]*)\*', ln.replace('\\_', '_')))
    return norm(found)


def cli_opts(body):
    """A cli.md section's synopsis (its first code block) and the option column of its tables:
    "| `-f FMT` |", "| `-U`, `--force-share` |"."""
    found = set()
    text = '\n'.join(body)
    m = re.search(r'^```\n(.*?)^```', text, re.M | re.S)
    if m:
        found |= set(OPT.findall(m.group(1)))
    for ln in body:
        m = re.match(r'^\|\s*(`-.*?)\s*\|', ln)
        if m:
            for span in re.findall(r'`([^`]*)`', m.group(1)):
                t = OPT.match(span)
                if t:
                    found.add(t.group(1))
    return norm(found)


def ublk_opts(sub):
    """dev subcommands: every option in the usage of the Commands table of ublk.md."""
    text = open(os.path.join(DOC, 'ublk.md')).read()
    body = sections(text, r'^## (Commands)$')['Commands']
    for ln in body:
        m = re.match(r'^\| `ucow dev %s\b(.*?)` \|' % re.escape(sub), ln)
        if m:
            return norm(OPT.findall(m.group(1).replace('\\|', '|')))
    return None


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else 'build'
    ucow = os.path.join(build, 'ucow')
    man1 = sections(open(os.path.join(DOC, 'man', 'ucow.1.scd')).read(), r'^## (ucow .*)')
    man8 = sections(open(os.path.join(DOC, 'man', 'ucow-dev.8.scd')).read(), r'^## (ucow .*)')
    cli = sections(open(os.path.join(DOC, 'cli.md')).read(), r'^## (ucow \S+)\s*$')
    out = subprocess.run([ucow, '--help'], capture_output=True, text=True).stdout
    cmds = [m.group(1) for m in re.finditer(r'^  (\w+) ', out, re.M)]
    out = subprocess.run([ucow, 'dev', '--help'], capture_output=True, text=True).stdout
    subs = sorted(set(re.findall(r'^\s*(?:usage: )?\s*ucow dev (\w[\w-]*)', out, re.M)) - {'SUBCOMMAND'})
    if len(cmds) < 10 or len(subs) < 6:
        print('FAIL options/setup: found commands %s, dev subcommands %s' % (cmds, subs))
        return 1
    rc = 0
    todo = [([c], man1, cli.get('ucow ' + c), 'cli.md') for c in cmds if c != 'dev']
    todo += [(['dev', s], man8, None, 'ublk.md') for s in subs]
    for words, man, ref, refname in todo:
        name = ' '.join(words)
        groups = help_opts(ucow, words)
        h = set().union(*groups) if groups else set()
        body = man.get('ucow ' + name)
        m = man_opts(body) if body is not None else None
        r = cli_opts(ref) if words[0] != 'dev' and ref is not None else None
        if words[0] == 'dev':
            r = ublk_opts(words[1])
        why = []
        if m is None:
            why.append('no "## ucow %s" section in the man page' % name)
        elif m != h:
            why.append('man page: missing %s, extra %s' % (sorted(h - m), sorted(m - h)))
        if r is None:
            why.append('no reference of "ucow %s" in %s' % (name, refname))
        else:
            missing = ['/'.join(sorted(g)) for g in groups if not g & r]
            if missing or r - h:
                why.append('%s: missing %s, extra %s' % (refname, missing, sorted(r - h)))
        if why:
            print('FAIL options/%s: %s' % (name.replace(' ', '-'), '; '.join(why)))
            rc = 1
        else:
            print('PASS options/%s (%d options)' % (name.replace(' ', '-'), len(groups)))
    return rc


if __name__ == '__main__':
    sys.exit(main())
