#!/bin/sh
# A worker that prints a line every 5 s and a warning to stderr now and then.
n=0
while :; do
  n=$((n + 1))
  echo "worker tick $n"
  [ $((n % 3)) -eq 0 ] && echo "worker: queue is slow" >&2
  sleep 5
done
