"""Workload generator for the benchmarks and the parser tests: realistic log lines, byte-identical per seed.

    python bench/gen.py KIND LINES FILE [--seed N]

KIND is one of:

- ``docker``: Docker json-file lines (``{"log": "...\\n", "stream": ..., "time": RFC 3339 with ns}``),
  application log text inside, as a container runtime writes them;
- ``apache``: Apache/nginx combined access-log lines;
- ``syslog``: RFC 3164 lines (``<PRI>Mmm dd hh:mm:ss host app[pid]: msg``);
- ``rfc5424``: RFC 5424 lines, newline framed, some with structured data.

The same (kind, lines, seed) always writes the same bytes (a seeded ``random.Random``
and a fixed start time), so benchmark files can be checked by size and md5
(``bench/run.py`` keeps the expected digests) and compared across machines and runs.
Timestamps advance by one millisecond per line from 2026-03-14 09:26:53 UTC.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from collections.abc import Callable, Iterator

START = dt.datetime(2026, 3, 14, 9, 26, 53, tzinfo=dt.UTC)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

HOSTS = [f"{role}-{n:02d}" for role in ("web", "api", "db", "cache", "lb", "worker") for n in range(1, 13)]
APPS = ("nginx", "sshd", "cron", "kernel", "postfix/smtpd", "dockerd", "containerd", "systemd", "app", "haproxy")
SERVICES = ("checkout", "billing", "search", "gateway", "inventory", "auth", "notifications", "orders")
LEVELS = ("INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR")
THREADS = ("main", "worker-1", "worker-2", "worker-3", "scheduler", "http-nio-8080-exec-17", "kafka-consumer-0")
LOGGERS = ("com.acme.http.Server", "com.acme.db.ConnectionPool", "com.acme.cache.Client", "io.grpc.netty.Server",
           "org.apache.kafka.clients.Consumer", "com.acme.orders.Service")
PATHS = ("/", "/index.html", "/login", "/api/v1/orders", "/api/v1/users/me", "/static/app.js", "/static/style.css",
         "/health", "/metrics", "/search?q=shoes&page=2", "/api/v1/cart/items?limit=50")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "kube-probe/1.30",
)
REFERERS = ("-", "https://shop.example.org/", "https://shop.example.org/cart", "https://duckduckgo.com/")


def _message(r: random.Random) -> str:
    """An application message of the kinds real services print."""
    pick = r.randrange(6)
    if pick == 0:
        return (f"{r.choice(('GET', 'POST', 'PUT'))} {r.choice(PATHS)} completed in {r.randrange(1, 2500)}ms "
                f"status={r.choice((200, 200, 201, 204, 404, 500))} request_id={r.getrandbits(64):016x}")
    if pick == 1:
        return (f"connection to {r.choice(HOSTS)}:{r.choice((5432, 6379, 9092, 9200))} failed "
                f"(attempt {r.randrange(1, 6)}/5): connection refused")
    if pick == 2:
        return (f"cache miss key=\"{r.choice(SERVICES)}:item:{r.randrange(10**6)}\" "
                f"ttl={r.randrange(60, 86400)}")
    if pick == 3:
        return (f'{{"event":"order_created","order_id":{r.randrange(10**8)},'
                f'"amount":{r.randrange(100, 100000) / 100:.2f},"currency":"EUR","items":{r.randrange(1, 12)}}}')
    if pick == 4:
        return (f"consumed {r.randrange(1, 1000)} records from topic {r.choice(SERVICES)}-events "
                f"partition {r.randrange(32)} offset {r.randrange(10**9)}")
    return f"user {r.randrange(10**7)} logged in from {_ip(r)} using {r.choice(('password', 'sso', 'token'))}"


def _ip(r: random.Random) -> str:
    return f"{r.randrange(1, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def docker(r: random.Random, t: dt.datetime, i: int) -> str:
    text = (f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d} {r.choice(LEVELS)} [{r.choice(THREADS)}] "
            f"{r.choice(LOGGERS)} - {_message(r)}")
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    ns = t.microsecond * 1000 + r.randrange(1000)
    return (f'{{"log":"{text}\\n","stream":"{r.choice(("stdout", "stdout", "stderr"))}",'
            f'"time":"{t:%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"}}')


def apache(r: random.Random, t: dt.datetime, i: int) -> str:
    user = r.choice(("-", "-", "-", "alice", "bob"))
    return (f'{_ip(r)} - {user} [{t:%d}/{MONTHS[t.month - 1]}/{t:%Y:%H:%M:%S} +0000] '
            f'"{r.choice(("GET", "GET", "GET", "POST", "HEAD"))} {r.choice(PATHS)} HTTP/1.1" '
            f'{r.choice((200, 200, 200, 304, 301, 404, 500))} {r.randrange(0, 200000)} '
            f'"{r.choice(REFERERS)}" "{r.choice(AGENTS)}"')


def syslog(r: random.Random, t: dt.datetime, i: int) -> str:
    pri = r.randrange(8) + 8 * r.choice((1, 3, 4, 10, 16, 23))
    return (f"<{pri}>{MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S} {r.choice(HOSTS)} "
            f"{r.choice(APPS)}[{r.randrange(1, 65536)}]: {_message(r)}")


def rfc5424(r: random.Random, t: dt.datetime, i: int) -> str:
    pri = r.randrange(8) + 8 * r.choice((1, 3, 16, 23))
    sd = "-"
    if r.randrange(3):
        sd = (f'[origin@32473 ip="{_ip(r)}" software="{r.choice(SERVICES)}" '
              f'swVersion="{r.randrange(1, 5)}.{r.randrange(20)}"]')
    return (f"<{pri}>1 {t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z {r.choice(HOSTS)} "
            f"{r.choice(SERVICES)} {r.randrange(1, 65536)} ID{r.randrange(100)} {sd} {_message(r)}")


KINDS: dict[str, Callable[[random.Random, dt.datetime, int], str]] = {
    "docker": docker,
    "apache": apache,
    "syslog": syslog,
    "rfc5424": rfc5424,
}


def lines(kind: str, n: int, seed: int = 7) -> Iterator[str]:
    """The first ``n`` lines of a workload (without newlines)."""
    make = KINDS[kind]
    r = random.Random(f"{kind}:{seed}")
    step = dt.timedelta(milliseconds=1)
    t = START
    for i in range(n):
        yield make(r, t, i)
        t += step


def write(kind: str, n: int, path: str, seed: int = 7) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        batch: list[str] = []
        for line in lines(kind, n, seed):
            batch.append(line)
            if len(batch) >= 10_000:
                fh.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            fh.write("\n".join(batch) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("lines", type=int)
    ap.add_argument("file")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    write(a.kind, a.lines, a.file, a.seed)


if __name__ == "__main__":
    main()
