# A background worker: prints a heartbeat every 5 seconds and stops cleanly on SIGINT.
import signal
import sys
import time

running = True


def stop(signum, frame):
    global running
    print(f"worker: got signal {signum}, finishing", flush=True)
    running = False


signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
n = 0
while running:
    if n % 25 == 0:
        print(f"worker: heartbeat {n // 25}")
    n += 1
    time.sleep(0.2)
print("worker: stopped cleanly", flush=True)
sys.exit(0)
