#!/usr/bin/env bash
# The quick start, end to end on this machine: a throwaway Dovecot mailbox holding three
# messages, `pophook receive` as the webhook, and `pophook once` moving the mail from
# one to the other. Installs what it needs (Dovecot, OpenSSL headers) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
pophook_ensure_deps
if [ "$(id -u)" -ne 0 ]; then
  # Dovecot must start as root to switch to the mail user.
  exec sudo -E env "PATH=$PATH" bash "$0" "$@"
fi

echo "== building pophook" >&2
cargo build --release --locked --quiet
bin=$PWD/target/release/pophook

demo=$(mktemp -d /tmp/pophook-demo.XXXXXX)
chmod 755 "$demo"
pop3_port=${POP3_PORT:-11110}
hook_port=${HOOK_PORT:-18080}
secret="whsec_$(head -c 32 /dev/urandom | base64)"
cleanup() {
  [ -n "${receiver_pid:-}" ] && kill "$receiver_pid" 2>/dev/null || true
  [ -f "$demo/run/master.pid" ] && kill "$(cat "$demo/run/master.pid")" 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT

echo "== starting a throwaway Dovecot on 127.0.0.1:$pop3_port (mailbox 'demo')" >&2
mkdir -p "$demo/run" "$demo/home/demo/Maildir/"{new,cur,tmp}
echo "demo:{PLAIN}demo-password:65534:65534::$demo/home/demo" > "$demo/passwd"
cat > "$demo/dovecot.conf" <<CONF
protocols = pop3
listen = 127.0.0.1
base_dir = $demo/run
state_dir = $demo/run
log_path = $demo/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
# The mail user is nobody (65534): Dovecot refuses to serve mail as root.
first_valid_uid = 100
passdb {
  driver = passwd-file
  args = $demo/passwd
}
userdb {
  driver = passwd-file
  args = $demo/passwd
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $pop3_port
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = 0
  }
}
CONF
for n in 1 2 3; do
  printf 'From: Customer %s <customer%s@example.com>\nTo: support@example.com\nSubject: Order #100%s has not arrived\nMessage-ID: <demo-%s@example.com>\nDate: %s\n\nHello, my order #100%s has not arrived yet.\n' \
    "$n" "$n" "$n" "$n" "$(date -R)" "$n" > "$demo/home/demo/Maildir/new/$(date +%s).demo$n.localhost"
done
chown -R 65534:65534 "$demo/home"
dovecot -c "$demo/dovecot.conf"
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$pop3_port) 2>/dev/null && break; sleep 0.1; done

echo "== starting the webhook receiver on 127.0.0.1:$hook_port (pophook receive)" >&2
"$bin" receive --listen "127.0.0.1:$hook_port" --secret "$secret" &
receiver_pid=$!
sleep 0.5

cat > "$demo/pophook.yaml" <<CONF
state_dir: $demo/state
webhook:
  url: http://127.0.0.1:$hook_port/inbound
  secret: $secret
mailboxes:
  - name: demo
    host: 127.0.0.1
    port: $pop3_port
    tls: none
    allow_insecure: true   # a loopback demo; real mailboxes use implicit TLS or STARTTLS
    username: demo
    password: demo-password
CONF
count() { find "$demo/home/demo/Maildir/new" "$demo/home/demo/Maildir/cur" -type f | wc -l; }
echo "== messages in the mailbox before: $(count)" >&2
echo "== pophook once (signed events arrive at the receiver below)" >&2
"$bin" once --config "$demo/pophook.yaml"
sleep 0.3
echo "== messages in the mailbox after: $(count)" >&2
echo "== done. To poll continuously: pophook run --config your-config.yaml (see config.example.yaml)" >&2
