#!/usr/bin/env python3
"""Hold an image open read-write in a real writer, for the -U tests (t_force_share.sh).

  holder.py UCOW IMAGE READY CMD...

Runs `UCOW io -c CMD ... IMAGE` followed by thousands of small reads, with its output going to
a pipe this script reads only until every CMD has printed its line: then it writes "ready" to
the file READY and reads no more. The writer has run the CMDs (their writes, their flushes)
and stays blocked on the full pipe, the image open read-write and locked, until this script
gets SIGTERM: then it kills the writer (SIGKILL: the image stays dirty, as after a crash).
If the writer ends early, READY gets "failed" and its stderr.
"""
import signal
import subprocess
import sys
import time

ucow, image, ready, cmds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
args = [ucow, 'io']
for c in cmds + ['read 0 512'] * 30000:     # 30000 lines: far more than a pipe holds
    args += ['-c', c]
p = subprocess.Popen(args + [image], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(*_):
    p.kill()
    p.wait()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
for _ in cmds:
    if not p.stdout.readline():
        p.wait()
        open(ready, 'w').write('failed: ' + p.stderr.read().decode(errors='replace'))
        sys.exit(1)
open(ready, 'w').write('ready\n')
while True:
    time.sleep(1)
