"""A free loopback TCP port for a server a test starts. Another process may take it before
the server binds it: the server helpers that use it retry with a new one when their server
says the address is in use (tests/source/etcdtest.py, redis_server.py)."""
import socket


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
