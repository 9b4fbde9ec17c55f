"""The client scenario through a meta-protocol client library:
meta-memcache (PyPI), which speaks only mg/ms/md/ma/mn.

    python meta_client.py WRITER READER PREFIX

WRITER and READER are HOST:PORT of the nodes writes and reads go through
(the same node, or two nodes of a cluster). Exits non-zero at the first
check that fails, naming it.

Reads go through meta_get with chosen flags and through the library's own
get(), multi_get() and get_cas(), which also ask for h (hit before) and l
(last access).
"""

import sys

from checks import check, fail
from meta_memcache import (
    CacheClient,
    Key,
    Miss,
    RequestFlags,
    ServerAddress,
    SetMode,
    Value,
    connection_pool_factory_builder,
)


def client(addr):
    host, port = addr.rsplit(":", 1)
    return CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host=host, port=int(port))],
        connection_pool_factory_fn=connection_pool_factory_builder(recv_timeout=5, connection_timeout=5),
    )


READ = RequestFlags(return_value=True, return_ttl=True, return_client_flag=True, return_cas_token=True)


def read(c, key):
    """(value, ttl, cas) or None on a miss."""
    result = c.meta_get(Key(key), flags=READ)
    if isinstance(result, Miss):
        return None
    if not isinstance(result, Value):
        fail(f"read {key}: {result!r}")
    return result.value, result.flags.ttl, result.flags.cas_token


def main():
    writer, reader, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    w, r = client(writer), client(reader)
    k = lambda name: prefix + name

    check("set", w.set(k("a"), "alpha", ttl=0), True)
    got = read(r, k("a"))
    check("get after set", got and got[0], "alpha")
    check("no ttl", got[1], -1)
    check("a miss", read(r, k("never")), None)

    check("set with a ttl", w.set(k("t"), "timed", ttl=100), True)
    ttl = read(r, k("t"))[1]
    if not 0 < ttl <= 100:
        fail(f"ttl {ttl}")

    check("add on a present key", w.set(k("a"), "other", ttl=0, set_mode=SetMode.ADD), False)
    check("add on an absent key", w.set(k("b"), "beta", ttl=0, set_mode=SetMode.ADD), True)
    check("replace on an absent key", w.set(k("nothing"), "x", ttl=0, set_mode=SetMode.REPLACE), False)
    check("replace", w.set(k("b"), "bravo", ttl=0, set_mode=SetMode.REPLACE), True)
    check("get after replace", read(r, k("b"))[0], "bravo")

    # The library's high-level reads (they ask for h and l as well).
    check("get", r.get(k("a")), "alpha")
    check("get of a miss", r.get(k("never")), None)
    check("multi_get", sorted(v for v in r.multi_get([k("a"), k("b"), k("never")]).values() if v), ["alpha", "bravo"])
    value, token = r.get_cas(k("b"))
    check("get_cas", (value, isinstance(token, int)), ("bravo", True))
    seen = r.meta_get(Key(k("a")), flags=RequestFlags(return_fetched=True, return_last_access=True))
    check("hit before, after reads", seen.flags.fetched, True)
    check("last access, just now", seen.flags.last_access, 0)
    check("set again", w.set(k("h"), "fresh", ttl=0), True)
    fresh = r.meta_get(Key(k("h")), flags=RequestFlags(return_fetched=True))
    check("not hit before, once written", fresh.flags.fetched, False)

    many = r.meta_multiget([Key(k("a")), Key(k("b")), Key(k("never"))], flags=READ)
    check("multi-get hits", sorted(v.value for v in many.values() if isinstance(v, Value)), ["alpha", "bravo"])

    # cas: a fresh token is honoured (through the other node), a used one refused.
    token = read(r, k("a"))[2]
    check("cas with a fresh token", w.set(k("a"), "again", ttl=0, cas_token=token), True)
    check("cas with a stale token", w.set(k("a"), "stale", ttl=0, cas_token=token), False)
    check("get after cas", read(r, k("a"))[0], "again")
    check("set_cas returns the new token", isinstance(w.set_cas(k("a"), "with-token", ttl=0), int), True)

    # counters
    check("delta on an absent counter", w.delta(k("n"), 1), False)
    check("delta_initialize_and_get", w.delta_initialize_and_get(k("n"), 5, 10, 0), 10)
    check("delta_and_get", w.delta_and_get(k("n"), 5), 15)
    check("delta down", w.delta_and_get(k("n"), -3), 12)
    check("read the counter", read(r, k("n"))[0], "12")

    check("touch", w.touch(k("a"), ttl=50), True)
    ttl = read(r, k("a"))[1]
    if not 0 < ttl <= 50:
        fail(f"ttl after touch {ttl}")

    check("delete", w.delete(k("b")), True)
    check("get after delete", read(r, k("b")), None)
    check("delete again", w.delete(k("b")), False)
    print("ok")


main()
