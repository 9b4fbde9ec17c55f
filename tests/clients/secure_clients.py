"""Python's memcached clients over TLS and with authentication, against a
Kai node: pymemcache with a TLS context, pylibmc (libmemcached) with SASL
PLAIN on the binary protocol, and pymemcache sending memcached's text
authentication token by hand. Exits non-zero, saying why, on any failure.

    secure_clients.py pymemcache-tls HOST:PORT PREFIX CA [--cert CERT --key KEY] [--user U --password P]
    secure_clients.py pylibmc-sasl HOST:PORT PREFIX USER PASSWORD
    secure_clients.py ascii-auth HOST:PORT PREFIX USER PASSWORD
"""

import ssl
import sys


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def endpoint(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def pymemcache_tls(addr, prefix, ca, *options):
    from pymemcache.client.base import Client

    named = dict(zip(options[::2], options[1::2]))
    cert, key = named.get("--cert"), named.get("--key")
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    client = Client(endpoint(addr), tls_context=context, connect_timeout=5, timeout=5, default_noreply=False)
    if "--user" in named:
        check("the token over TLS", client.set("auth", f"{named['--user']} {named['--password']}"), True)
    client.set(prefix + "tls", b"over tls")
    check("get over TLS", client.get(prefix + "tls"), b"over tls")
    client.set_many({prefix + "a": b"1", prefix + "b": b"2"})
    check("get_many over TLS", client.get_many([prefix + "a", prefix + "b"]), {prefix + "a": b"1", prefix + "b": b"2"})
    check("incr over TLS", client.incr(prefix + "a", 41), 42)
    # A value bigger than one TLS record (16 KiB), in both directions.
    big = bytes(range(256)) * 1024
    client.set(prefix + "big", big)
    check("a 256 KiB value over TLS", client.get(prefix + "big"), big)
    client.close()


def pylibmc_sasl(addr, prefix, user, password):
    import pylibmc

    client = pylibmc.Client([addr], binary=True, username=user, password=password)
    client.set(prefix + "sasl", "authenticated")
    check("get after SASL", client.get(prefix + "sasl"), "authenticated")
    client.set(prefix + "n", "1")
    check("incr after SASL", client.incr(prefix + "n", 1), 2)
    wrong = pylibmc.Client([addr], binary=True, username=user, password=password + "x")
    try:
        wrong.set(prefix + "sasl", "intruder")
    except pylibmc.Error:
        pass
    else:
        sys.exit("a wrong password was taken")
    check("the value a wrong password tried to change", client.get(prefix + "sasl"), "authenticated")


def ascii_auth(addr, prefix, user, password):
    from pymemcache.client.base import Client

    # memcached's convention: a `set` whose value is "user password",
    # before anything else on the connection.
    client = Client(endpoint(addr), connect_timeout=5, timeout=5, default_noreply=False)
    check("the token", client.set("auth", f"{user} {password}"), True)
    client.set(prefix + "ascii", b"authenticated")
    check("get after the token", client.get(prefix + "ascii"), b"authenticated")
    client.close()
    stranger = Client(endpoint(addr), connect_timeout=5, timeout=5)
    try:
        stranger.get(prefix + "ascii")
    except Exception as e:  # pymemcache raises its client error here
        check("the refusal", "unauthenticated" in str(e), True)
    else:
        sys.exit("an unauthenticated client was answered")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"pymemcache-tls": pymemcache_tls, "pylibmc-sasl": pylibmc_sasl, "ascii-auth": ascii_auth}[mode](*args)
    print("ok")
