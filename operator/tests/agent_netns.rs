//! The node agent's partition for real: `firedrill agent cut` runs inside a
//! network namespace of its own (`unshare -n`, as root, with Debian's
//! nftables), and a TCP server on that namespace's loopback stops answering
//! (connections time out: dropped, not refused) until the deadline, when the
//! kernel's `meta time` rules stop matching on their own, with no agent left
//! to lift them. `lift` ends it early. Needs root (for the namespace) and
//! nftables (`make test` installs it with tests/deps.sh).

use std::process::Command;

fn require_netns() {
    let ok = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "these tests need a network namespace of their own (unshare -n, as root)"
    );
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "these tests need nft (Debian's nftables; tests/deps.sh installs it)"
    );
}

/// Run `script` in a fresh network namespace; its stdout.
fn in_netns(script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-n", "bash", "-euo", "pipefail", "-c", script])
        .env("FIREDRILL", env!("CARGO_BIN_EXE_firedrill"))
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

const SERVER: &str = r#"
ip link set lo up
python3 -c 'import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 18181)); s.listen(16)
while True:
    c,_=s.accept(); c.sendall(b"up\n"); c.close()' &
server=$!
trap 'kill $server' EXIT
sleep 0.5
try() { python3 -c 'import socket,sys
s=socket.create_connection(("127.0.0.1", 18181), timeout=1.5)
print(s.recv(16).decode().strip() or "empty")' 2>/dev/null || echo "timed out"; }
"#;

#[test]
fn the_partition_drops_traffic_until_the_kernel_deadline() {
    require_netns();
    let script = format!(
        r#"{SERVER}
echo "before: $(try)"
until=$(( $(date +%s) + 5 ))
"$FIREDRILL" agent cut --until "$until" --no-spare-loopback
nft list table inet firedrill_power_loss | grep -c 'meta time' | sed 's/^/rules: /'
echo "during: $(try)"
# Nobody lifts it: the deadline does.
while [ "$(date +%s)" -le "$until" ]; do sleep 0.5; done
echo "after the deadline: $(try)"
"#
    );
    let out = in_netns(&script);
    assert!(out.contains("before: up"), "{out}");
    assert!(out.contains("rules: 3"), "{out}");
    assert!(
        out.contains("during: timed out"),
        "dropped, not refused:\n{out}"
    );
    assert!(out.contains("after the deadline: up"), "{out}");
}

#[test]
fn lift_ends_the_partition_at_once() {
    require_netns();
    let script = format!(
        r#"{SERVER}
"$FIREDRILL" agent cut --until $(( $(date +%s) + 600 )) --no-spare-loopback
echo "during: $(try)"
"$FIREDRILL" agent lift
echo "lifted: $(try)"
"$FIREDRILL" agent lift && echo "lift again: ok"
"#
    );
    let out = in_netns(&script);
    assert!(out.contains("during: timed out"), "{out}");
    assert!(out.contains("lifted: up"), "{out}");
    assert!(
        out.contains("lift again: ok"),
        "lifting twice is harmless:\n{out}"
    );
}
