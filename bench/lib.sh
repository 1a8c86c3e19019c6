# Shared by the benchmark scripts (sourced). Callers define note() and
# kStopDeadlineSeconds before calling these.

# alive PID: true while the process runs; a zombie (exited, not reaped) is gone.
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ]
}

# stop_process PID LABEL: SIGTERM, SIGKILL after kStopDeadlineSeconds (with a
# warning), then reap it; returns its exit status.
stop_process() {
  local pid=$1 label=$2
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + kStopDeadlineSeconds))
    while alive "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        note "warning: $label (pid $pid) ignored SIGTERM for ${kStopDeadlineSeconds}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  fi
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}
