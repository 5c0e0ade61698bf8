"""The least a Python SSE server can do: ``make bench``'s ``python-floor``.

The suite runs it beside the peers, so each run shows what the kernel and the
interpreter leave for any pub/sub server written in Python on that machine; it
has no target of its own. It is one ``epoll`` loop over raw non-blocking
sockets, no framework, no HTTP library:

* ``GET /events?topic=T`` answers an SSE head and adds the socket to ``T``'s list;
* ``POST /publish?topic=T`` sends ``data: <body>\\n\\n`` to every socket of
  ``T``, one ``send`` each, then a fixed ``202``;
* a stream that hangs up leaves its topic.

Nothing else: no consumers, event ids or replay buffer (so no resume, like
sse-starlette), no metrics, no limits, no error answers. Bytes a full socket
did not take wait in that connection's buffer for ``EPOLLOUT``, so every frame
arrives, in order, and the load generator's checks hold for it as for the
others. It trusts its client (the load generator) and is not a server to run.

    python -m bench.python_floor PORT
"""

from __future__ import annotations

import select
import socket
import sys
from collections import defaultdict

_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\nretry: 3000\n\n"
)
_ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
_LENGTH = b"\r\nContent-Length: "


class _Connection:
    __slots__ = ("inbound", "outbound", "sock", "topic")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Request bytes not yet parsed.
        self.inbound = b""
        #: Bytes the socket has not taken yet.
        self.outbound = b""
        #: The topic of a stream; empty for a publisher's connection.
        self.topic = b""


class PythonFloor:
    """The whole server: a listening socket, its connections and the topics' streams."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port), backlog=4096)
        self.listener.setblocking(False)
        self.poller = select.epoll()
        self.poller.register(self.listener.fileno(), select.EPOLLIN)
        self.connections: dict[int, _Connection] = {}
        self.streams: defaultdict[bytes, list[_Connection]] = defaultdict(list)

    def serve_forever(self) -> None:
        listening = self.listener.fileno()
        while True:
            for fd, events in self.poller.poll():
                if fd == listening:
                    self._accept()
                    continue
                conn = self.connections[fd]
                if events & select.EPOLLOUT:
                    self._writable(conn)
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self._readable(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _address = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections[sock.fileno()] = _Connection(sock)
            self.poller.register(sock.fileno(), select.EPOLLIN)

    def _readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
        elif not conn.topic:  # a stream's client sends nothing more after its request
            conn.inbound += data
            self._requests(conn)

    def _requests(self, conn: _Connection) -> None:
        data = conn.inbound
        while (end := data.find(b"\r\n\r\n")) >= 0:
            head = data[: end + 2]  # with its last line's CRLF, for the length lookup
            at = head.find(_LENGTH)
            length = int(head[at + len(_LENGTH) : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
            size = end + 4 + length
            if len(data) < size:
                break
            target = head[: head.index(b"\r\n")].split(b" ")[1]
            topic = target.partition(b"topic=")[2]
            if head.startswith(b"GET "):
                conn.topic = topic
                self.streams[topic].append(conn)
                self._send(conn, _STREAM_HEAD)
                data = b""
                break
            frame = b"data: " + data[end + 4 : size] + b"\n\n"
            for stream in self.streams.get(topic, ()):
                self._send(stream, frame)
            self._send(conn, _ACCEPTED)
            data = data[size:]
        conn.inbound = data

    def _send(self, conn: _Connection, data: bytes) -> None:
        if conn.outbound:  # behind bytes still waiting: in order, on EPOLLOUT
            conn.outbound += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:  # gone: its hang-up is read next
            return
        if sent < len(data):
            conn.outbound = data[sent:]
            self.poller.modify(conn.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def _writable(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbound)
        except BlockingIOError:
            return
        except OSError:  # gone: its hang-up is read next
            sent = len(conn.outbound)
        conn.outbound = conn.outbound[sent:]
        if not conn.outbound:
            self.poller.modify(conn.sock.fileno(), select.EPOLLIN)

    def _close(self, conn: _Connection) -> None:
        if conn.topic:
            members = self.streams[conn.topic]
            members.remove(conn)
            if not members:
                del self.streams[conn.topic]
        del self.connections[conn.sock.fileno()]
        self.poller.unregister(conn.sock.fileno())
        conn.sock.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.python_floor PORT")
    server = PythonFloor(int(sys.argv[1]))
    print("listening", flush=True)
    server.serve_forever()
