"""A listening socket on 127.0.0.1 with a thread per accepted connection: the scaffolding of the origins and relays
the HTTP/2-upstream tests write in Python (test_h2_upstream, test_h2_upstream_health)."""

import socket
import threading


class ThreadedServer:
    """Listens on `host`:`port` (0: a free port; `self.port` says which) and calls `self.handle(sock, conn_no)` in a
    daemon thread per accepted connection, conn_no counting from 1. `conns` counts accepts and `socks` keeps every
    accepted socket (a handler may add its own) for stop() to close; `lock` guards both. A subclass sets its own
    fields before calling ThreadedServer.__init__: a connection may arrive at once. `rcvbuf` sets the listener's
    SO_RCVBUF, which accepted sockets inherit."""

    def __init__(self, host="127.0.0.1", port=0, backlog=64, rcvbuf=None):
        self.lock = threading.Lock()
        self.conns = 0
        self.socks = []
        self.threads = []
        self.stopping = False
        self.lsock = socket.socket()
        if rcvbuf:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind((host, port))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                no = self.conns
                self.socks.append(s)
            t = threading.Thread(target=self.handle, args=(s, no), daemon=True)
            t.start()
            self.threads.append(t)

    def handle(self, s, no):
        raise NotImplementedError

    def stop(self):
        """Stops accepting and closes every socket it accepted; handlers see their socket fail and return."""
        self.stopping = True
        self.lsock.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
