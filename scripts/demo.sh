#!/bin/sh
# The enforcer demo: starts the agent with the policies in $EXAMPLES and runs sample
# workloads in their cgroups, checking each outcome. Runs inside the demo VM (PID 1's
# child) or natively in a private network namespace.
# Environment: ENFORCER (binary), EXAMPLES (policy dir), CGROUP_ROOT (cgroup v2 mount).
set -u
ENFORCER=${ENFORCER:-enforcer}
EXAMPLES=${EXAMPLES:-/examples}
CGROUP_ROOT=${CGROUP_ROOT:-/sys/fs/cgroup}
RUN=/run/enforcer-demo
LOG=$RUN/verdicts.jsonl
failures=0

ip link set lo up 2>/dev/null
say() { printf '%s\n' "$*"; }

# Workload fixtures: secrets of two teams, a long-lived credential, agent tools.
mkdir -p /srv/secrets/payments /srv/secrets/billing /home/ci/.aws /opt/agent-tools /srv/www "$RUN"
: > "$RUN/request"
echo "pay-api-key" > /srv/secrets/payments/api.key
echo "billing-db-password" > /srv/secrets/billing/db.key
echo "[default] aws_secret_access_key=AKIA..." > /home/ci/.aws/credentials
echo "pay here" > /srv/www/index.html
printf 'GET / HTTP/1.0\r\n\r\n' > "$RUN/request"
for BUSYBOX in /bin/busybox /usr/bin/busybox; do [ -x "$BUSYBOX" ] && break; done
# Busybox copies act as the applet they are named after.
cp "$BUSYBOX" /opt/agent-tools/sh
cp "$BUSYBOX" /opt/agent-tools/grep

# Endpoints on loopback: the registry network, a payment API, an outside host.
ip addr add 10.20.0.5/32 dev lo
ip addr add 10.99.0.10/32 dev lo
ip addr add 203.0.113.7/32 dev lo
for addr in 10.20.0.5 10.99.0.10 203.0.113.7; do
  "$BUSYBOX" httpd -p "$addr:443" -h /srv/www
done

for workload in payments ci-runner ai-agent; do
  mkdir -p "$CGROUP_ROOT/demo/$workload"
done

export ENFORCER_SOCKET="$RUN/api.sock"
"$ENFORCER" agent --state-dir "$RUN/state" --bpffs /sys/fs/bpf/enforcer-demo \
  --log-file "$LOG" --cgroup-root "$CGROUP_ROOT" --on-exit detach 2> "$RUN/agent.err" &
agent=$!
for _ in $(seq 1 1200); do
  grep -q "enforcer agent ready" "$RUN/agent.err" 2>/dev/null && break
  sleep 0.1
done
if ! grep -q "enforcer agent ready" "$RUN/agent.err"; then
  say "the agent did not start:"; cat "$RUN/agent.err"; exit 1
fi
sed 's/^/  agent: /' "$RUN/agent.err"

# run_in WORKLOAD COMMAND...: runs COMMAND as a new process in the workload's cgroup.
run_in() {
  cgroup=$1; shift
  sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CGROUP_ROOT/demo/$cgroup" "$@"
}

# expect allowed|denied DESCRIPTION WORKLOAD COMMAND...
expect() {
  want=$1; what=$2; shift 2
  out=$(run_in "$@" 2>&1 < "$RUN/request"); rc=$?
  if [ $rc -eq 0 ]; then got=allowed; else got=denied; fi
  case "$out" in *"not permitted"*) detail=" (EPERM)" ;; *) detail="" ;; esac
  if [ "$got" = "$want" ]; then mark="ok  "; else mark="FAIL"; failures=$((failures + 1)); fi
  printf '  [%s] %-52s %s%s\n' "$mark" "$what" "$got" "$detail"
  if [ "$mark" = FAIL ]; then printf '         output: %s\n' "$out"; fi
}

# step TITLE: prints a step of the walkthrough.
step() { say ""; say "\$ $*"; }

mkdir -p "$RUN/audit"
for f in "$EXAMPLES"/*.yaml; do sed 's/mode: enforce/mode: audit/' "$f" > "$RUN/audit/$(basename "$f")"; done
step 'enforcer policy apply -f examples/   # with mode: audit'
"$ENFORCER" policy apply -f "$RUN/audit"
say ""
say "== audit mode: everything runs, what would be denied is logged"
expect allowed "payments-api reads billing's secret" payments cat /srv/secrets/billing/db.key
expect allowed "ci-runner reads the long-lived credential" ci-runner cat /home/ci/.aws/credentials
expect allowed "ai-agent runs the shell tool" ai-agent /opt/agent-tools/sh -c true
sleep 1
step enforcer verdicts tail --no-follow --decision audit
"$ENFORCER" verdicts tail --no-follow --decision audit --last 20
step enforcer policy diff -f examples/
"$ENFORCER" policy diff -f "$EXAMPLES" | grep -v '^     '
step enforcer policy apply -f examples/
"$ENFORCER" policy apply -f "$EXAMPLES"

say ""
say "== payments-api: its own secret yes, another team's no"
expect allowed "read /srv/secrets/payments/api.key" payments cat /srv/secrets/payments/api.key
expect denied  "read /srv/secrets/billing/db.key" payments cat /srv/secrets/billing/db.key
say "== ci-runner: no long-lived credential, egress only to the registry"
expect denied  "read /home/ci/.aws/credentials" ci-runner cat /home/ci/.aws/credentials
expect allowed "connect registry 10.20.0.5:443" ci-runner nc -w 5 10.20.0.5 443
expect denied  "connect outside host 203.0.113.7:443" ci-runner nc -w 5 203.0.113.7 443
say "== ai-agent: no shell tool, no route to the payment API"
expect denied  "exec shell tool /opt/agent-tools/sh" ai-agent /opt/agent-tools/sh -c true
expect allowed "exec search tool /opt/agent-tools/grep" ai-agent /opt/agent-tools/grep -q pay /srv/www/index.html
expect denied  "connect payment API 10.99.0.10:443" ai-agent nc -w 5 10.99.0.10 443
expect allowed "connect registry 10.20.0.5:443" ai-agent nc -w 5 10.20.0.5 443
say "== an unmanaged process is untouched"
out=$(cat /srv/secrets/billing/db.key 2>&1) && say "  [ok  ] read /srv/secrets/billing/db.key outside any identity      allowed" \
  || { say "  [FAIL] unmanaged read was refused: $out"; failures=$((failures + 1)); }


say ""
say "== real-time decisioning: current facts change the very next syscall"
step 'enforcer quarantine ci-runner --reason "token seen on a paste site"'
"$ENFORCER" quarantine ci-runner --reason "token seen on a paste site"
expect denied  "ci-runner connects to the registry (quarantined)" ci-runner nc -w 5 10.20.0.5 443
expect denied  "ci-runner writes a file (quarantined)" ci-runner sh -c 'echo x > /tmp/ci-output'
expect allowed "ci-runner still runs and reads (its quarantine allows exec)" ci-runner cat /srv/www/index.html
step enforcer release ci-runner
"$ENFORCER" release ci-runner
expect allowed "ci-runner connects to the registry (released)" ci-runner nc -w 5 10.20.0.5 443
step 'enforcer grant ci-runner --connect 203.0.113.7/32:443/tcp --ttl 4s --reason "one-off mirror sync"'
"$ENFORCER" grant ci-runner --connect 203.0.113.7/32:443/tcp --ttl 4s --reason "one-off mirror sync"
expect allowed "ci-runner connects to 203.0.113.7:443 (granted)" ci-runner nc -w 5 203.0.113.7 443
sleep 5
expect denied  "ci-runner connects to 203.0.113.7:443 (grant expired)" ci-runner nc -w 5 203.0.113.7 443
step 'enforcer credentials revoke /srv/secrets/payments/api.key --reason "leaked in a build log"'
"$ENFORCER" credentials revoke /srv/secrets/payments/api.key --reason "leaked in a build log"
expect denied  "payments-api reads its own key (revoked)" payments cat /srv/secrets/payments/api.key

sleep 1
step enforcer verdicts tail --no-follow --decision deny
"$ENFORCER" verdicts tail --no-follow --decision deny --last 20
step enforcer verdicts tail --no-follow --identity ci-runner --decision allow
"$ENFORCER" verdicts tail --no-follow --identity ci-runner --decision allow
step enforcer check --identity ai-agent --connect 10.99.0.10:443/tcp
"$ENFORCER" check --identity ai-agent --connect 10.99.0.10:443/tcp
step enforcer identities
"$ENFORCER" identities
step enforcer status
"$ENFORCER" status
kill -TERM "$agent"
wait "$agent"
say ""
if [ "$failures" -eq 0 ]; then say "DEMO OK"; else say "DEMO FAILED: $failures unexpected outcomes"; exit 1; fi
