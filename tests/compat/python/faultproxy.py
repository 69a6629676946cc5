"""A loopback TCP proxy that cuts connections at random, for idempotence tests.

The broker advertises the proxy's address (`rill serve --advertised-listeners`), so every
client connection goes through it. While `cutting` is on, each proxied connection gets a random
byte budget (both directions counted); when it is spent the proxy closes both sides, often in
the middle of a request or of its response: exactly the lost-acknowledgement case that makes
an idempotent producer resend a batch the broker already stored. `upstream` may change (a
restarted broker on a new port); new connections go there.
"""
import random
import socket
import threading

CHUNK = 64 * 1024


class CuttingProxy:
    def __init__(self, seed, min_bytes=20_000, max_bytes=400_000):
        self.rng = random.Random(seed)
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.upstream = None
        self.cutting = False
        self.cuts = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.open = set()
        self.stopped = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = self.upstream
            if upstream is None:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", upstream), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += 1
                budget = [self.rng.randint(self.min_bytes, self.max_bytes)]
                self.open.update((client, server))
            pair = (client, server)
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair, budget),
                                 daemon=True).start()

    def _close(self, pair):
        with self.lock:
            for s in pair:
                self.open.discard(s)
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _pump(self, src, dst, pair, budget):
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                with self.lock:
                    cut = self.cutting and budget[0] <= len(data)
                    if self.cutting:
                        budget[0] -= len(data)
                    if cut:
                        self.cuts += 1
                if cut:
                    # Forward a random prefix: a torn request or response.
                    keep = self.rng.randint(0, len(data))
                    dst.sendall(data[:keep])
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._close(pair)

    def drop_all(self):
        """Closes every proxied connection now (the broker died, say)."""
        with self.lock:
            sockets = list(self.open)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.listener.close()
        self.drop_all()
