"""The client scenario through Python's memcached clients: pylibmc (on
libmemcached; text or binary protocol) and pymemcache.

    python3 python_clients.py pylibmc|pylibmc-binary|pymemcache WRITER READER PREFIX

WRITER and READER are HOST:PORT of the nodes writes and reads go through
(the same node, or two nodes of a cluster). Exits non-zero at the first
check that fails, naming it.
"""

import sys

from checks import check, fail

TOKEN_LIMIT = 1 << 32


class Pylibmc:
    """pylibmc as it is, but for NotFound, raised where others answer."""

    def __init__(self, addr, binary):
        import pylibmc

        self.mc = pylibmc
        self.c = pylibmc.Client([addr], binary=binary, behaviors={"cas": True})

    def __getattr__(self, name):
        return getattr(self.c, name)

    def unless_absent(self, call, *args, absent=False):
        try:
            return call(*args)
        except self.mc.NotFound:
            return absent

    def replace(self, k, v):
        return self.unless_absent(self.c.replace, k, v)

    def append(self, k, v):
        return self.unless_absent(self.c.append, k, v)

    def prepend(self, k, v):
        return self.unless_absent(self.c.prepend, k, v)

    def incr(self, k, d):
        return self.unless_absent(self.c.incr, k, d, absent=None)

    def decr(self, k, d):
        return self.unless_absent(self.c.decr, k, d, absent=None)


class Pymemcache:
    """pymemcache as it is, but for its bytes keys and tokens."""

    def __init__(self, addr):
        from pymemcache.client.base import Client

        host, port = addr.rsplit(":", 1)
        self.c = Client((host, int(port)), default_noreply=False, connect_timeout=5, timeout=5)

    def __getattr__(self, name):
        return getattr(self.c, name)

    def get_multi(self, ks):
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in self.c.get_many(ks).items()}

    def gets(self, k):
        value, token = self.c.gets(k)
        return value, None if token is None else int(token)

    def cas(self, k, v, token):
        return bool(self.c.cas(k, v, token))


def scenario(a, b, p):
    """The same steps as the other languages' scripts: writes through `a`,
    reads (and the second half of each check) through `b`."""
    k, missing = p + "k", p + "missing"
    check("set", a.set(k, b"v1"), True)
    check("get", b.get(k), b"v1")
    check("get missing", b.get(missing), None)

    a.set(p + "m1", b"one")
    a.set(p + "m2", b"two")
    check("multi-get", b.get_multi([p + "m1", p + "m2", missing]), {p + "m1": b"one", p + "m2": b"two"})

    check("add present", a.add(k, b"x"), False)
    check("add absent", a.add(p + "new", b"n"), True)
    check("get added", b.get(p + "new"), b"n")
    check("replace absent", a.replace(missing, b"x"), False)
    check("replace present", a.replace(k, b"v2"), True)
    check("append", a.append(k, b"-tail"), True)
    check("prepend", a.prepend(k, b"head-"), True)
    check("append absent", a.append(missing, b"x"), False)
    check("get after append and prepend", b.get(k), b"head-v2-tail")

    a.set(p + "n", b"10")
    check("incr", a.incr(p + "n", 5), 15)
    check("decr below zero", b.decr(p + "n", 20), 0)
    # memcached pads a shrunk counter with spaces; both are fine.
    check("get counter", b.get(p + "n").rstrip(b" "), b"0")
    check("incr absent", a.incr(missing, 1), None)

    check("touch present", a.touch(k, 100), True)
    check("touch absent", a.touch(missing, 100), False)

    check("delete present", a.delete(p + "new"), True)
    check("get deleted", b.get(p + "new"), None)
    check("delete absent", a.delete(p + "new"), False)

    value, token = a.gets(k)
    check("gets value", value, b"head-v2-tail")
    if not isinstance(token, int) or not 0 < token < TOKEN_LIMIT:
        fail(f"gets token {token!r} is not in (0, 2^32)")
    check("cas with the fresh token", b.cas(k, b"swapped", token), True)
    check("cas with the stale token", a.cas(k, b"again", token), False)
    check("get after cas", b.get(k), b"swapped")
    value, fresh = b.gets(k)
    check("gets after cas", value, b"swapped")
    if fresh == token:
        fail("the token did not change with the value")
    check("cas with the new token", a.cas(k, b"again", fresh), True)

    a.set(p + "alike1", b"same")
    a.set(p + "alike2", b"same")
    if a.gets(p + "alike1")[1] == a.gets(p + "alike2")[1]:
        fail("two keys written alike share a token")


def main():
    client, writer, reader, prefix = sys.argv[1:5]
    make = {
        "pylibmc": lambda addr: Pylibmc(addr, binary=False),
        "pylibmc-binary": lambda addr: Pylibmc(addr, binary=True),
        "pymemcache": Pymemcache,
    }[client]
    scenario(make(writer), make(reader), prefix)
    print(f"ok {client}")


if __name__ == "__main__":
    main()
