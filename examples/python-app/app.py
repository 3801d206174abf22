# A Python HTTP service under pm-runtime (PYTHONUNBUFFERED is set for python interpreters).
import http.server
import os
import signal
import sys

port = int(os.environ.get("PORT", "3400"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from python, instance {os.environ.get('NODE_APP_INSTANCE')}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
print(f"python app listening on {port}")
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
