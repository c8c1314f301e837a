#!/usr/bin/env python3
"""The classic socketserver exercise: a threaded TCP server that upper-cases.

Reference server for the sockit benchmarks, written in the style of the usual
exercise: one thread per connection, recv(1024) in a loop, send back
data.upper(). The listen backlog is the socketserver default
(request_queue_size = 5), as in the exercises.

    usage: python3 threaded_upper.py PORT      (binds 127.0.0.1:PORT)
"""
import socketserver
import sys


class UpperHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(1024)
            if not data:
                break
            self.request.sendall(data.upper())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    # request_queue_size left at the socketserver default (5)


def main():
    if len(sys.argv) != 2:
        print("usage: python3 threaded_upper.py PORT", file=sys.stderr)
        sys.exit(2)
    port = int(sys.argv[1])
    with Server(("127.0.0.1", port), UpperHandler) as server:
        print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
