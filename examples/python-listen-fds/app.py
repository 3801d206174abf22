# A Python HTTP service that gets its listening socket from pm-runtime (systemd's LISTEN_FDS
# convention): every instance serves the same port, as Node workers do in cluster mode.
import http.server
import os
import signal
import socket
import sys

if os.environ.get("LISTEN_FDS") != "1" or os.environ.get("LISTEN_PID") != str(os.getpid()):
    sys.exit("expected one socket from pm-runtime (listen_fds: true)")
sock = socket.socket(fileno=3)  # SD_LISTEN_FDS_START


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"python pid {os.getpid()} instance {os.environ.get('NODE_APP_INSTANCE')}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
server.socket = sock
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
print(f"python instance {os.environ.get('NODE_APP_INSTANCE')} serving on fd 3", flush=True)
server.serve_forever()
