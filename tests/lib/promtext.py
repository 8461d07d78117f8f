# SPDX-License-Identifier: MIT
"""A reader of the Prometheus text exposition format for the metrics
tests: fetches /metrics and turns the samples into a dict, so that a test
can compare counters with what its clients did.  It reads only what
nbd-serverd writes (one sample per line, no timestamps) and fails loudly
on anything else, so a malformed line cannot pass unnoticed."""

import re
import sys
import urllib.error
import urllib.request

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1),
                                                       m.group(1)), v)


def parse(text):
    """{(name, ((label, value), ...sorted)): float} for every sample."""
    out = {}
    for line in text.splitlines():
        if line == "" or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError("not a sample line: %r" % line)
        name, labels = m.group(1), []
        body = m.group(3) or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL.match(body, pos)
            if lm is None:
                raise ValueError("bad labels in %r" % line)
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
        key = (name, tuple(sorted(labels)))
        if key in out:
            raise ValueError("sample given twice: %r" % line)
        out[key] = float(m.group(4))
    return out


def fetch(url, timeout=10):
    """(HTTP status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(addr):
    """The parsed samples of http://ADDR/metrics (status 200 or exit)."""
    status, body = fetch("http://%s/metrics" % addr)
    if status != 200:
        sys.exit("GET /metrics: status %d" % status)
    return parse(body)


def get(samples, name, **labels):
    """One sample's value; 0 when the series is absent (a counter that has
    not moved need not be written)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples, name):
    """[(labels dict, value)] of every sample of `name`."""
    return [(dict(k[1]), v) for k, v in samples.items() if k[0] == name]
